"""``reed-molecule``: train, sample and evaluate 3-D molecule diffusion models on QM9."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

EPILOG = "Data: QM9 from the qm9pack wheel, cached under $REED_MOLECULE_CACHE (or the platform cache dir)."


def _train(args: argparse.Namespace) -> int:
    from reed_core.cli import check_grad_accum, check_weight_decay

    from .config import MODEL_PRESETS
    from .presets import PRESET, capture_layer
    from .process import check_time_power

    init = None
    if args.init is not None:
        from .loading import model_config

        if args.preset is not None:
            raise ValueError("--preset and --init exclude each other: the model's size comes from the --init checkpoint")
        init = _checkpoint_path(None if args.init == "shipped" else args.init)
    model = model_config(init) if init else MODEL_PRESETS[args.preset or "tiny"]
    check_time_power(args.time_power, "--time-power")
    check_grad_accum(args.grad_accum, args.batch_size)
    check_weight_decay(args.weight_decay)
    if args.eval_every < 0 or args.eval_molecules < 1:
        raise ValueError(f"--eval-every must be >= 0 and --eval-molecules >= 1, got {args.eval_every}, {args.eval_molecules}")
    if args.eval_samples < 0:
        raise ValueError(f"--eval-samples must be >= 0, got {args.eval_samples}")
    if args.select_on != "valid_loss" and not (args.eval_every and args.eval_samples):
        raise ValueError(f"--select-on {args.select_on} scores sampled molecules: it needs --eval-every N and --eval-samples N")
    kw = {"model": model if init else args.preset or "tiny", "steps": args.steps, "batch_size": args.batch_size,
          "lr": args.lr, "lr_decay": args.lr_decay, "lr_final": args.lr_final, "seed": args.seed,
          "time_power": args.time_power, "align_coefficient": args.align_coefficient, "precision": args.precision,
          "grad_accum": args.grad_accum, "weight_decay": args.weight_decay}
    if args.dry_run:
        coefficient = PRESET.align_coefficient if args.align_coefficient is None else args.align_coefficient
        layers = {s.name: capture_layer(model, s.layer) for s in PRESET.for_method(args.method)}
        print(json.dumps({"method": args.method, **kw, "model": "from --init" if init else kw["model"],
                          "init": str(init) if init else None, "align_coefficient": coefficient,
                          "model_config": asdict(model), "latents": layers,
                          "curriculum": asdict(PRESET.curriculum), "out": str(args.out),
                          "eval_every": args.eval_every, "eval_molecules": args.eval_molecules,
                          "eval_samples": args.eval_samples, "select_on": args.select_on}, indent=2))
        return 0
    import torch

    from reed_core.cli import parse_duration, report_training, start_from

    from .data import QM9Dataset
    from .presets import molecule_trainer, validation

    budget = parse_duration(args.time_budget) if args.time_budget else None
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = QM9Dataset("train", args.cache, limit=args.train_limit, pack=args.pack)
    trainer = molecule_trainer(args.method, ds, args.out, cache=args.cache, device=args.device, **kw)
    if args.eval_every:
        trainer.validation = validation(trainer, args.eval_every, molecules=args.eval_molecules, cache=args.cache,
                                        pack=args.pack, samples=args.eval_samples, select=args.select_on)
    start_from(trainer, init)
    trainer.fit(time_budget=budget)
    return report_training(trainer, args.method)


def _finite(value):
    """``value`` with every non-finite float as None (JSON has no NaN; a mean over no molecules is undefined)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _pack(args: argparse.Namespace) -> int:
    from reed_core.io import output_path

    from .pack import build_pack, default_pack_path, write_pack
    from .qm9 import graph_counts

    out = output_path(args.out or default_pack_path())
    arrays = build_pack(args.cache, progress=not args.quiet)
    write_pack(out, arrays)
    counts = graph_counts({"source": arrays["graph_source"]})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(arrays['num_atoms'])} molecules; bond graphs "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _checkpoint_path(arg: str | None) -> Path:
    from reed_core.cli import resolve_checkpoint

    from .loading import default_checkpoint

    return resolve_checkpoint(arg, default_checkpoint)


def _atom_counts(text: str) -> int | tuple[int, int]:
    """``19`` -> 19; ``15-20`` -> (15, 20)."""
    try:
        lo, _, hi = text.partition("-")
        counts = (int(lo), int(hi)) if hi else int(lo)
    except ValueError:
        raise ValueError(f"--num-atoms: expected a count (19) or a range (15-20), got {text!r}") from None
    lo, hi = counts if isinstance(counts, tuple) else (counts, counts)
    if not 1 <= lo <= hi <= 200:
        raise ValueError(f"--num-atoms: expected 1 <= low <= high <= 200, got {text!r}")
    return counts


def _sample(args: argparse.Namespace) -> int:
    from reed_core.io import output_path

    from .io import SUFFIXES, MoleculeFormatError, write_molecules
    from .loading import load_model
    from .process import check_noise_scale, check_time_power
    from .sampler import sample_molecules

    out = output_path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise MoleculeFormatError(f"{out}: output must end in {', '.join(SUFFIXES)}")
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    num_atoms = _atom_counts(args.num_atoms) if args.num_atoms else None
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    check_time_power(args.spacing, "--spacing")
    check_noise_scale(args.noise_scale, "--noise-scale")
    loaded = load_model(_checkpoint_path(args.checkpoint), device=args.device)
    arrays = sample_molecules(loaded, args.n, num_steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                              progress=True, device=args.device, num_atoms=num_atoms, spacing=args.spacing,
                              noise_scale=args.noise_scale, posterior=args.posterior)
    write_molecules(arrays, out)
    print(f"wrote {args.n} molecules to {out}")
    return 0


def _per_molecule_csv(records, res) -> str:
    """One row per evaluated record: EDM's validity, largest-fragment SMILES, stability (n/a outside H/C/N/O/F),
    the unstable atoms and the smallest repair (``diagnose``)."""
    import csv
    import io

    from .chem import edm_bond_orders, pairwise_distances
    from .constants import SYMBOLS, VALENCE
    from .diagnose import repair_shift, valence_errors
    from .io import pad
    from .metrics import GEOMETRY_PROBLEMS, size_batches

    diagnosis = {}  # record index -> (valence errors, smallest repair), computed in batches of similar size
    for idx in size_batches([len(r.types) for r in records]):
        a = pad([records[k] for k in idx])
        d = pairwise_distances(a["pos"])
        errors = valence_errors(a["pos"], a["atoms"], a["mask"], edm_bond_orders(a["pos"], a["atoms"], a["mask"], d))
        shifts = repair_shift(a["pos"], a["atoms"], a["mask"], distances=d)
        diagnosis |= {k: (errors[j, : len(records[k].types)], float(shifts[j])) for j, k in enumerate(idx.tolist())}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["record", "atoms", "valid", "smiles", "mol_stable", "atoms_stable", "geometry", "unstable_atoms",
                "repair_shift_A"] + (["connected", "bond_mol_stable"] if res.connected is not None else []))
    stable = res.mol_stable
    for i, r in enumerate(records):
        ok = res.defined[i]
        unstable, shift = "n/a", "n/a"
        if ok:
            err, s = diagnosis[i]
            unstable = " ".join(f"{SYMBOLS[r.types[k]]}{k + 1}:{VALENCE[r.types[k]] + err[k]}"
                                for k in err.nonzero()[0])
            shift = "gave up" if math.isnan(s) else "inf" if math.isinf(s) else f"{s:.3f}"
        row = [r.number, res.num_atoms[i], int(res.smiles[i] is not None), res.smiles[i] or "",
               int(stable[i]) if ok else "n/a", f"{res.atoms_stable[i]}/{res.num_atoms[i]}" if ok else "n/a",
               GEOMETRY_PROBLEMS[res.geometry[i]], unstable, shift]
        if res.connected is not None:
            row += [int(res.connected[i]), int(res.bond_atoms_stable[i] == res.num_atoms[i]) if ok else "n/a"]
        w.writerow(row)
    return buf.getvalue()


def _eval(args: argparse.Namespace) -> int:
    from reed_core.io import atomic_write, output_path

    from .io import MoleculeFormatError, read_records
    from .metrics import evaluate_records, summarise

    for out in (args.json, args.per_molecule):
        if out:
            output_path(out)
    records, bad = read_records(args.file)
    if not records:
        first = f"record {bad[0][0]}: {bad[0][1]}"
        raise MoleculeFormatError(f"{args.file}: {first}" if len(bad) == 1
                                  else f"{args.file}: no readable molecule in {len(bad)} records ({first}; ...)")
    for number, why in bad[:20]:
        print(f"{args.file}: record {number}: {why}", file=sys.stderr)
    if len(bad) > 20:
        print(f"{args.file}: ... and {len(bad) - 20} more bad records", file=sys.stderr)
    train = None
    if not args.no_novelty:
        from .qm9 import graphs_cached, training_smiles

        if not graphs_cached(args.cache):
            print("novelty needs the SMILES of QM9's training split: building them once from qm9pack (a few minutes, "
                  "then cached; --no-novelty skips this)", file=sys.stderr)
        train = training_smiles(args.cache, progress=True)
    res = evaluate_records(records)
    report = summarise(res, train)
    print(report.table())
    result = asdict(report)
    if bad:
        result["bad_records"] = [{"record": k, "reason": why} for k, why in bad]
        print(f"{len(bad)} of {len(bad) + len(records)} records could not be read and are not counted (listed on "
              f"stderr){'' if args.strict else '; --strict makes that an error'}")
    if args.energy:
        result["energy"] = _energy(records)
    if args.diagnose:
        result["diagnosis"] = _diagnose(records)
    if args.strict and bad:
        print(f"reed-molecule: error: {args.file}: {len(bad)} bad record(s) (--strict); no output written", file=sys.stderr)
        return 1
    if args.json:
        atomic_write(args.json, json.dumps(_finite(result), indent=2))
    if args.per_molecule:
        atomic_write(args.per_molecule, _per_molecule_csv(records, res))
    return 0


def _diagnose(records) -> dict:
    """Why the molecules are EDM-unstable (``diagnose.failure_report``), printed and returned for the JSON."""
    from .diagnose import REPAIR_SHIFTS, failure_report
    from .io import pad
    from .metrics import size_batches

    def batches():
        for idx in size_batches([len(r.types) for r in records]):
            a = pad([records[k] for k in idx])
            yield a["pos"], a["atoms"], a["mask"]

    d = failure_report(batches())
    if not d["molecules"]:
        print("diagnosis: n/a (EDM stability is defined for H, C, N, O, F only)")
        return d
    print(f"why unstable: {d['unstable']} of {d['molecules']} molecules"
          + (f" ({d['undefined']} with other elements left out)" if d["undefined"] else ""))
    if d["unstable"]:
        bins = "  ".join(f"<= {b['up_to']:g} Å {b['share_of_unstable']:.1f}%" for b in d["repair"])
        print(f"  smallest repair, every pair distance moved by at most: {bins}  beyond "
              f"{REPAIR_SHIFTS[-1]:g} Å {d['beyond']['share_of_unstable']:.1f}% (of the unstable)"
              + (f"; search gave up on {d['search_gave_up']}" if d["search_gave_up"] else ""))
        print(f"  odd valence sum (no bond graph fits the atom types): {d['odd_valence_sum']:.1f}% of the molecules "
              f"({d['odd_valence_sum_one_unstable_atom']:.1f}% with a single unstable atom: radicals)")
        print("  unstable atoms: " + ", ".join(f"{k['kind']} {k['share']:.1f}%" for k in d["atom_kinds"][:5]))
    return d


def _energy(records) -> dict | None:
    from .io import to_mol
    from .metrics import mmff_energies

    mols = [to_mol(r.types, r.bonds, r.charges, r.pos) for r in records if r.bonds is not None]
    if not mols:
        print("MMFF94: the file has no bonds (XYZ); --energy needs SDF or an npz with bonds")
        return None
    energy = mmff_energies(mols)
    if energy is None:
        print("MMFF94: no molecule could be typed")
        return None
    print(f"{'MMFF94 energy (kcal/mol, mean)':<31}  {energy.energy_mean:>8.2f}")
    print(f"{'MMFF94 strain (kcal/mol, mean)':<31}  {energy.strain_mean:>8.2f}")
    print(f"{'MMFF94 opt. RMSD (Å, mean)':<31}  {energy.rmsd_mean:>8.3f}")
    if energy.n_failed:
        print(f"MMFF94: {energy.n_failed} molecule(s) gave a non-finite energy (atoms on top of each other?) "
              "and are not scored")
    return asdict(energy)


def build_parser() -> argparse.ArgumentParser:
    from reed_core.cli import (
        METHOD_NAMES,
        HelpFormatter,
        add_grad_accum_argument,
        add_lr_schedule_arguments,
        add_precision_argument,
        add_weight_decay_argument,
    )

    from .config import (
        MODEL_PRESETS,
        SAMPLER_NOISE_SCALE,
        SAMPLER_POSTERIOR,
        SAMPLER_POSTERIORS,
        SAMPLER_SPACING,
        SAMPLER_STEPS,
        SELECT_ON,
    )
    from .pack import default_pack_path

    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="reed-molecule", description=__doc__, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    pk = sub.add_parser("pack", help="write the compact QM9 training pack once (needs RDKit; training from it does not)",
                        formatter_class=fmt)
    pk.add_argument("--out", default=None, help="pack file (default: $REED_MOLECULE_PACK or the package's data/qm9_pack.npz)")
    pk.add_argument("--cache", default=None, help="data cache directory of the RDKit build")
    pk.add_argument("--quiet", action="store_true", help="no progress bars")
    pk.set_defaults(func=_pack)

    t = sub.add_parser("train", help="train a denoiser (vanilla, REPA-style or REED)", formatter_class=fmt)
    t.add_argument("--method", choices=METHOD_NAMES, default="reed", help="training method")
    t.add_argument("--preset", choices=sorted(MODEL_PRESETS), default=None, help="model size (default: tiny)")
    t.add_argument("--init", default=None,
                   help="fine-tune: start a fresh run from this checkpoint or run directory (its EMA weights and "
                        "model size; `shipped`: the shipped model)")
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=32, help="molecules per step")
    t.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    add_lr_schedule_arguments(t)
    add_weight_decay_argument(t)
    add_precision_argument(t)
    add_grad_accum_argument(t)
    t.add_argument("--seed", type=int, default=0, help="seed (init, data order, noise)")
    t.add_argument("--time-power", type=float, default=1.0, metavar="P",
                   help="training times t = u^P, u ~ U(0,1): 1 = uniform (EQGAT-diff's); P > 1 trains the low-noise end "
                        "more often (P = 2: t < 0.55 in 74%% of the draws instead of 55%%)")
    t.add_argument("--align-coefficient", type=float, default=None,
                   help="projection coefficient lambda (default: the preset's, 0.2)")
    t.add_argument("--train-limit", type=int, default=None, help="use only the first N training molecules")
    t.add_argument("--out", default="runs/molecule", help="run directory (checkpoints, metrics.jsonl); resumes if present")
    t.add_argument("--cache", default=None, help="data/feature cache directory")
    t.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    t.add_argument("--pack", nargs="?", const=str(default_pack_path()), default=None,
                   help="train from the compact training pack (numpy only, no RDKit; default path if given bare)")
    t.add_argument("--time-budget", default=None,
                   help="stop cleanly with a checkpoint before this much wall time (e.g. 8m, 90s); rerun to resume")
    t.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="every N steps score the EMA weights on the validation loss (validation.jsonl; torch only, no "
                        "sampling) and keep the lowest-loss weights in OUT/best (sample with --checkpoint OUT/best); 0: never")
    t.add_argument("--eval-molecules", type=int, default=512, metavar="N",
                   help="validation molecules (fixed; each at 8 fixed times with fixed noise)")
    t.add_argument("--eval-samples", type=int, default=0, metavar="N",
                   help="at every evaluation also sample N molecules with the default sampler (the same atom counts and "
                        "noise each time) and record their EDM atom / molecule stability (distance bonds: no RDKit); 0: never")
    t.add_argument("--select-on", choices=SELECT_ON, default="valid_loss",
                   help="what OUT/best keeps: the lowest valid_loss, or the highest sampled mol_stable / atom_stable "
                        "(needs --eval-samples)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="sample molecules into an SDF, XYZ or npz file", formatter_class=fmt)
    s.add_argument("-n", type=int, default=100, help="number of molecules")
    s.add_argument("--out", required=True, help="output file (.sdf, .xyz, or .npz in EDM's layout)")
    s.add_argument("--num-atoms", default=None, metavar="N|LO-HI",
                   help="atoms per molecule: a count or an inclusive range (the training histogram restricted to it; "
                        "QM9 models saw 3-29); default: the training histogram")
    s.add_argument("--checkpoint", default=None, help="checkpoint or run directory (default: the shipped REED model)")
    s.add_argument("--steps", type=int, default=SAMPLER_STEPS, help="sampling steps")
    s.add_argument("--spacing", type=float, default=SAMPLER_SPACING, metavar="P",
                   help="time grid t_i = (1 - i / steps) ** P: 1 uniform, > 1 more steps at low noise")
    s.add_argument("--posterior", choices=SAMPLER_POSTERIORS, default=SAMPLER_POSTERIOR,
                   help="the atom/charge/bond types' reverse step: exact (D3PM's sum over x0), or proportional, the "
                        "form of earlier versions (reproduces their samples; about 33 points less molecule stability)")
    s.add_argument("--noise-scale", type=float, default=SAMPLER_NOISE_SCALE, metavar="S",
                   help="factor on the coordinates' noise at every step: 1 the exact ancestral step, < 1 colder")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.add_argument("--batch-size", type=int, default=100, help="molecules per sampling batch")
    s.add_argument("--device", default="cpu", help="cpu / cuda")
    s.set_defaults(func=_sample)

    e = sub.add_parser("eval", help="print the metric table of any molecules (SDF, XYZ or EDM's npz; any size/element)",
                       formatter_class=fmt)
    e.add_argument("file", help="molecules (.sdf, .xyz or .npz)")
    e.add_argument("--no-novelty", action="store_true",
                   help="skip novelty (needs the QM9 training SMILES, built once from qm9pack on first use)")
    e.add_argument("--energy", action="store_true", help="also MMFF94 energy, strain and optimisation RMSD (needs bonds)")
    e.add_argument("--json", default=None, help="also write the metrics as JSON")
    e.add_argument("--per-molecule", default=None, metavar="CSV",
                   help="also write one CSV row per molecule (validity, SMILES, stability or n/a, geometry check; the "
                        "unstable atoms as element + 1-based index : EDM valence, e.g. C4:3; repair_shift_A: the "
                        "smallest change of pair distances (Å) that makes every atom stable, inf beyond 0.1 Å)")
    e.add_argument("--diagnose", action="store_true",
                   help="also say why molecules are EDM-unstable: the smallest change of pair distances that would "
                        "make each stable (geometry), odd valence sums (wrong composition), the unstable atoms by kind")
    e.add_argument("--strict", action="store_true", help="exit 1 (and write nothing) when any record is unreadable")
    e.add_argument("--cache", default=None, help="data cache directory")
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    from reed_core.cli import run_cli

    from .io import MoleculeFormatError
    from .qm9 import QM9Error

    return run_cli("reed-molecule", build_parser(), argv, (MoleculeFormatError, QM9Error))


if __name__ == "__main__":
    sys.exit(main())
