"""Which residues the sampler unmasks first: random (the reverse of the training corruption) against the most
confident draws first (MaskGIT's order): ``uv run benchmarks/protein_unmask_order.py [--checkpoint DIR]
[--splits valid] [--steps 10,20,50] [--seeds 0,1]``.

Recovery of every chain of the split at temperature 0.1 for each (steps, seed, order), each order compared with
random at the same steps and seed chain by chain (paired difference and its standard error over chains; the
seeds pooled by averaging each chain over them first), with the wall time per setting. Then diversity, the price
a sharper order might pay: ``--designs`` designs of each of ``--diversity-chains`` chains at each temperature, their
mean recovery and mean pairwise identity (over the designed residues; lower is more diverse); ``--mpnn`` adds
ProteinMPNN's own sampler on the same chains as the anchor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_protein.constants import UNMASK_ORDERS, X_INDEX  # noqa: E402
from reed_protein.data import ChainSet  # noqa: E402
from reed_protein.evaluation import evaluate  # noqa: E402
from reed_protein.loading import default_checkpoint, load_model  # noqa: E402
from reed_protein.sampler import design_batch  # noqa: E402


def _list(text: str, kind, flag: str) -> list:
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"{flag}: expected a comma-separated list, got {text!r}") from None


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of b - a over chains and its standard error."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    return {"diff": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None,
            "better": int((d > 0).sum()), "worse": int((d < 0).sum())}


def recovery_identity(sample, chains: ChainSet, ids, *, designs: int, device: str) -> dict:
    """Mean recovery and mean pairwise identity (over the designed residues) of ``designs`` designs per chain,
    ``sample(x)`` giving the (designs, L) tokens for ``designs`` copies ``x`` of one chain."""
    rec, ident = [], []
    for i in ids:
        x = chains.batch(np.full(designs, i)).to(device)
        with torch.no_grad():
            S = sample(x)
        scored = (x.design_mask & (x.S != X_INDEX))[0]
        s = S[:, scored]
        rec.append(float((s == x.S[0, scored]).float().mean()))
        same = (s[:, None, :] == s[None, :, :]).float().mean(-1)
        ident.append(float(same[~torch.eye(designs, dtype=torch.bool)].mean()))
    return {"recovery": 100.0 * float(np.mean(rec)), "identity": 100.0 * float(np.mean(ident))}


def diversity(model, chains: ChainSet, ids, *, order: str, temperature: float, designs: int, steps: int,
              seed: int, device: str) -> dict:
    """``recovery_identity`` of this model's sampler."""
    g = torch.Generator(device=device).manual_seed(seed)
    return recovery_identity(lambda x: design_batch(model, x, num_steps=steps, temperature=temperature, generator=g,
                                                    order=order)[0], chains, ids, designs=designs, device=device)


def mpnn_diversity(chains: ChainSet, ids, *, temperature: float, designs: int, seed: int, device: str,
                   noise: str = "020") -> dict:
    """``recovery_identity`` of ProteinMPNN's own sampler (``mpnn.proteinmpnn_sample``, as the benchmarks' reference
    row), the anchor for what its users get at a temperature."""
    from reed_protein.mpnn import load_proteinmpnn, proteinmpnn_sample

    model = load_proteinmpnn(noise=noise).to(device)
    torch.manual_seed(seed)  # its sampler draws residues from the global generator
    g = torch.Generator(device=device).manual_seed(seed)
    return recovery_identity(lambda x: proteinmpnn_sample(model, x, temperature=temperature, generator=g), chains,
                             ids, designs=designs, device=device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped model)")
    p.add_argument("--splits", default="valid", help="comma-separated: valid, test, ts50")
    p.add_argument("--orders", default=",".join(UNMASK_ORDERS), help="unmasking orders (random is the reference)")
    p.add_argument("--steps", default="20", help="comma-separated sampler step counts")
    p.add_argument("--seeds", default="0,1", help="comma-separated sampling seeds")
    p.add_argument("--diversity-chains", type=int, default=100, help="chains of the first split for diversity (0: skip)")
    p.add_argument("--designs", type=int, default=8, help="designs per chain for diversity")
    p.add_argument("--temperatures", default="0.1,0.3", help="temperatures for diversity")
    p.add_argument("--diversity-steps", type=int, default=10, help="sampler steps for diversity (design's default)")
    p.add_argument("--skip-recovery", action="store_true", help="diversity only")
    p.add_argument("--mpnn", action="store_true",
                   help="add ProteinMPNN v_48_020's own designs to the diversity table (needs reed-protein[mpnn])")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/protein_unmask_order.json")
    args = p.parse_args(argv)
    orders = _list(args.orders, str, "--orders")
    if "random" not in orders or any(o not in UNMASK_ORDERS for o in orders):
        raise SystemExit(f"--orders: choose from {UNMASK_ORDERS}, random included (the reference), got {args.orders!r}")
    orders = ["random"] + [o for o in orders if o != "random"]
    steps_list, seeds = _list(args.steps, int, "--steps"), _list(args.seeds, int, "--seeds")
    temperatures = _list(args.temperatures, float, "--temperatures")
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    chains = ChainSet()
    model = load_model(ckpt, device=args.device)
    result = {"checkpoint": str(ckpt), "device": args.device, "threads": torch.get_num_threads(), "seeds": seeds,
              "rows": [], "diversity": []}
    rows = []
    for split in [] if args.skip_recovery else args.splits.split(","):
        ids = chains.split(split)
        for steps in steps_list:
            per, per_seed = {}, {}
            for order in orders:
                runs = []
                for seed in seeds:
                    t0 = time.perf_counter()
                    r = evaluate(model, chains, ids, num_steps=steps, seed=seed, device=args.device, order=order,
                                 per_chain=True)
                    runs.append({"seed": seed, "recovery": r["recovery"], "seconds": round(time.perf_counter() - t0, 1),
                                 "per_chain": [round(v, 3) for v in r["per_chain"]]})
                per[order] = np.mean([r["per_chain"] for r in runs], axis=0)
                per_seed[order] = [r["per_chain"] for r in runs]
                row = {"split": split, "steps": steps, "order": order, "chains": len(ids), "runs": runs,
                       "recovery": float(per[order].mean())}
                if order != "random":
                    row["vs_random"] = paired(per["random"], per[order])
                    row["vs_random_per_seed"] = [paired(a, b) for a, b in
                                                 zip(per_seed["random"], per_seed[order], strict=True)]
                result["rows"].append(row)
                vs = row.get("vs_random")
                rows.append([split, steps, order, " / ".join(f"{r['recovery']:.2f}" for r in runs), row["recovery"],
                             "-" if vs is None else f"{vs['diff']:+.2f} ± {vs['se']:.2f} ({vs['better']}/{vs['worse']})",
                             np.mean([r["seconds"] for r in runs])])
                write_json(result, args.out)
    if rows:
        print(format_table(["split", "steps", "order", "recovery % per seed", "mean", "vs random (chains +/-)",
                            "s per run"], rows))
    if args.diversity_chains:
        split = args.splits.split(",")[0]
        ids = np.random.default_rng(0).permutation(chains.split(split))[: args.diversity_chains]
        drows = []
        for temperature in temperatures:
            for order in orders:
                t0 = time.perf_counter()
                d = diversity(model, chains, ids, order=order, temperature=temperature, designs=args.designs,
                              steps=args.diversity_steps, seed=seeds[0], device=args.device)
                d |= {"split": split, "chains": len(ids), "designs": args.designs, "temperature": temperature,
                      "order": order, "steps": args.diversity_steps, "seconds": round(time.perf_counter() - t0, 1)}
                result["diversity"].append(d)
                drows.append([temperature, order, d["recovery"], d["identity"], d["seconds"]])
                write_json(result, args.out)
            if args.mpnn:
                t0 = time.perf_counter()
                d = mpnn_diversity(chains, ids, temperature=temperature, designs=args.designs, seed=seeds[0],
                                   device=args.device)
                d |= {"split": split, "chains": len(ids), "designs": args.designs, "temperature": temperature,
                      "order": "ProteinMPNN v_48_020", "seconds": round(time.perf_counter() - t0, 1)}
                result["diversity"].append(d)
                drows.append([temperature, d["order"], d["recovery"], d["identity"], d["seconds"]])
                write_json(result, args.out)
        print(f"\nDiversity: {args.designs} designs of {len(ids)} {split} chains, {args.diversity_steps} steps")
        print(format_table(["temperature", "order", "recovery %", "pairwise identity %", "s"], drows))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
