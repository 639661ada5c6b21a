"""Why generated molecules fail EDM stability, against the QM9 test split failing it:
``uv run benchmarks/molecule_failures.py [--samples FILE ...] [--checkpoint DIR|shipped -n 1000 --seeds 0,1]``.

For every source (sample files that ``reed-molecule eval`` reads, freshly sampled checkpoints, and the QM9 test
split as the reference) it reports:

* the smallest repair of each unstable molecule (``reed_molecule.diagnose.repair_shift``): how far atom-pair
  distances must move, each by at most s, to make every atom's EDM valence exact. Failures repairable within
  0.01-0.05 Å are precision (the right bond graph, a distance just across a threshold); those beyond 0.1 Å are
  topology or composition (an odd sum of valences can never be stable). "stable if repaired within s" is the
  molecule stability a denoiser accurate to s on the failing pairs would reach, an upper bound on what sharper
  positions alone can buy;
* the unstable atoms by element and EDM valence (C with 3, H with 0, ...), as a share of all unstable atoms;
* bond-length spread: mean and standard deviation of the distances EDM reads as C-H, N-H, O-H, C-C, C=C, C-N, C-O
  and C=O bonds, and the share of bonded pairs within 2 pm of a bond-order threshold (ambiguous to EDM).

Numpy only besides reading files (no torch unless ``--checkpoint`` samples, no RDKit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_molecule.diagnose import AMBIGUOUS_PM, REPAIR_SHIFTS, failure_report  # noqa: E402


def analyse(pos: np.ndarray, typ: np.ndarray, mask: np.ndarray, max_shift: float = 0.1) -> dict:
    """Every figure of one source (padded arrays as ``reed_molecule.io.pad`` gives)."""
    return failure_report([(pos, typ, mask)], max_shift=max_shift)


def trajectory(ckpt: str, n: int, seed: int, posterior: str, steps: int | None = None) -> dict:
    """Follow the composition along the sampler's trajectory: at every step the share of molecules whose valence sum
    is odd, in the model's argmax prediction of x0 and in the sampled state after the step, the atom types the step
    changed, and the time after which each molecule's predicted parity no longer changes (``sample_molecules`` in one
    batch of ``n``, watched through its ``on_step``)."""
    import torch

    from reed_molecule.config import SAMPLER_STEPS
    from reed_molecule.constants import VALENCE
    from reed_molecule.loading import default_checkpoint, load_model
    from reed_molecule.sampler import sample_molecules

    valence = torch.as_tensor(VALENCE[:5])
    rows, pred_odd = [], []

    def odd(atoms, mask):
        return (valence[atoms.clamp(max=4)] * mask).sum(1) % 2 == 1

    def watch(i, t, x, pred, x_next):
        pred_odd.append(odd(pred.atom_logits.argmax(-1), x.mask).numpy())
        rows.append({"step": i, "t": t, "odd_prediction": 100.0 * float(pred_odd[-1].mean()),
                     "odd_state_after": 100.0 * float(odd(x_next.atoms, x.mask).float().mean()),
                     "atoms_changed": int(((x_next.atoms != x.atoms) & x.mask).sum())})

    steps = steps or SAMPLER_STEPS
    loaded = load_model(default_checkpoint() if ckpt == "shipped" else Path(ckpt))
    sample_molecules(loaded, n, num_steps=steps, seed=seed, batch_size=n, posterior=posterior, on_step=watch)
    pred_odd = np.array(pred_odd)
    after = [r["t"] for r in rows[1:]] + [0.0]  # the time each step ends at
    last_change = [max((i for i in range(steps) if pred_odd[i, b] != pred_odd[-1, b]), default=-1) for b in range(n)]
    settled = np.array([after[i] if i >= 0 else 1.0 for i in last_change])
    return {"checkpoint": ckpt, "n": n, "seed": seed, "posterior": posterior, "steps": steps, "rows": rows,
            "parity_settled_t_percentiles": dict(zip(("10", "50", "90"), np.percentile(settled, [10, 50, 90]).tolist(),
                                                     strict=True))}


def report(results: dict) -> None:
    names = list(results["sources"])
    rows = [[name, r["molecules"], r["mol_stable"], r["unstable"],
             *(f"{b['share_of_unstable']:.1f} ({b['stable_if_repaired']:.1f})" for b in r["repair"]),
             f"{r['beyond']['share_of_unstable']:.1f}", r["odd_valence_sum"], r["odd_valence_sum_one_unstable_atom"],
             r["search_gave_up"]]
            for name, r in results["sources"].items()]
    print("Unstable molecules by the smallest repair (share of unstable %, in brackets the molecule stability % if "
          "every repair up to that shift held):")
    print(format_table(["source", "molecules", "mol. stable %", "unstable",
                        *(f"<= {s} Å" for s in REPAIR_SHIFTS), f"> {REPAIR_SHIFTS[-1]} Å", "odd valence sum %",
                        "of which 1 unstable atom %", "gave up"], rows))
    print("(odd valence sum: % of all molecules whose atom types no bond graph can satisfy, a wrong composition; "
          "with one unstable atom: a radical)")
    print("\nUnstable atoms (share of all unstable atoms %; per unstable molecule):")
    kinds = []
    for r in results["sources"].values():
        for k in r["atom_kinds"][:6]:
            if k["kind"] not in kinds:
                kinds.append(k["kind"])
    table = {name: {k["kind"]: k["share"] for k in r["atom_kinds"]} for name, r in results["sources"].items()}
    print(format_table(["kind", *names], [[k, *(table[n].get(k, 0.0) for n in names)] for k in kinds]
                       + [["per unstable molecule", *(results["sources"][n]["unstable_atoms_per_unstable_molecule"]
                                                      for n in names)]]))
    print(f"\nBond lengths EDM reads (mean ± std, Å) and bonded pairs within {AMBIGUOUS_PM:g} pm of a threshold:")
    first = results["sources"][names[0]]["bond_lengths"]
    rows = [[bond, *(f"{b['mean']:.3f} ± {b['std']:.3f}" if (b := results['sources'][n]['bond_lengths'][bond])['bonds']
                     else "-" for n in names)] for bond in first]
    rows.append([f"ambiguous (±{AMBIGUOUS_PM:g} pm) %", *(results["sources"][n]["ambiguous_bonds"] for n in names)])
    print(format_table(["bond", *names], rows))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--samples", nargs="*", default=[], help="molecule files (.sdf / .xyz / .npz) to diagnose")
    p.add_argument("--checkpoint", nargs="*", default=[], help="checkpoints to sample from ('shipped': the shipped model)")
    p.add_argument("-n", type=int, default=1000, help="molecules sampled per checkpoint, seed and posterior (0: none)")
    p.add_argument("--seeds", default="0", help="sampling seeds, comma-separated: one source per checkpoint and seed "
                   "(the same molecules as `reed-molecule sample -n N --seed K`)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the sampler's)")
    p.add_argument("--reference", type=int, default=None,
                   help="QM9 test molecules for the reference row (default: all 13,083; 0: none)")
    p.add_argument("--max-shift", type=float, default=0.1, help="largest repair searched (Å, at most 0.15)")
    p.add_argument("--trajectory", type=int, default=0, metavar="N",
                   help="also follow N molecules' compositions along the sampler's trajectory (with --checkpoint)")
    p.add_argument("--posterior", default="exact", help="categorical reverse steps for --checkpoint and "
                   "--trajectory, comma-separated (exact, proportional: the form of earlier versions)")
    p.add_argument("--out", default="benchmarks/results/molecule_failures.json")
    args = p.parse_args(argv)
    if not (args.samples or args.checkpoint or args.reference != 0):
        p.error("nothing to diagnose: give --samples, --checkpoint, or a reference")
    try:
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    posteriors = args.posterior.split(",")
    if any(q not in ("exact", "proportional") for q in posteriors):
        p.error(f"--posterior: exact and/or proportional, got {args.posterior!r}")
    if args.trajectory and not args.checkpoint:
        p.error("--trajectory needs --checkpoint")
    start = time.perf_counter()
    results = {"max_shift": args.max_shift, "ambiguous_pm": AMBIGUOUS_PM, "sources": {}}
    for path in args.samples:
        from reed_molecule.io import read_molecules

        a = read_molecules(path)
        results["sources"][Path(path).name] = analyse(a["pos"], a["atoms"], a["mask"], args.max_shift)
    for ckpt in args.checkpoint:
        from reed_molecule.loading import default_checkpoint, load_model
        from reed_molecule.sampler import sample_molecules

        loaded = load_model(default_checkpoint() if ckpt == "shipped" else Path(ckpt))
        kw = {} if args.steps is None else {"num_steps": args.steps}
        for posterior in posteriors if args.n > 0 else []:  # -n 0: the trajectory alone
            for seed in seeds:
                a = sample_molecules(loaded, args.n, seed=seed, progress=True, posterior=posterior, **kw)
                name = f"{ckpt}, seed {seed}" + ("" if posteriors == ["exact"] else f", {posterior}")
                results["sources"][name] = analyse(a["pos"], a["atoms"], a["mask"], args.max_shift)
        for posterior in posteriors if args.trajectory else []:
            tr = trajectory(ckpt, args.trajectory, seeds[0], posterior, args.steps)
            results.setdefault("trajectories", []).append(tr)
            print(f"\n{ckpt}, {posterior} posterior: {args.trajectory} molecules along the trajectory (seed {seeds[0]}; "
                  "% with an odd valence sum)")
            picks = sorted({0, *range(10, tr["steps"], 10), tr["steps"] - 2, tr["steps"] - 1})
            print(format_table(["step", "t", "odd, predicted x0 %", "odd, sampled state %", "types changed"],
                               [[r["step"], f"{r['t']:.4f}", r["odd_prediction"], r["odd_state_after"],
                                 r["atoms_changed"]] for r in (tr["rows"][i] for i in picks)]))
            q = tr["parity_settled_t_percentiles"]
            print(f"t below which each molecule's predicted parity no longer changes: 10/50/90 % "
                  f"{q['10']:.3f} / {q['50']:.3f} / {q['90']:.3f}")
    if args.reference != 0:
        from reed_molecule import qm9

        mols = qm9.molecules("test", progress=False)
        ids = None
        if args.reference is not None:
            ids = np.random.default_rng(0).permutation(len(mols))[: args.reference]
        pos, typ, mask = mols.padded(ids)
        results["sources"]["QM9 test"] = analyse(pos, typ, mask, args.max_shift)
    results["seconds"] = round(time.perf_counter() - start, 1)
    report(results)
    write_json(results, args.out)
    return results


if __name__ == "__main__":
    main()
