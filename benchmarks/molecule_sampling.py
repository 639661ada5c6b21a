"""EDM metrics of molecule checkpoints by sampler step count, with the sampling time per molecule:
``uv run benchmarks/molecule_sampling.py [--checkpoint DIR ...] [--steps 25,50,100,250,500] [--spacing 1,2] [-n 500]``.

One checkpoint, several step counts: is the sampler's default the cheapest setting that loses nothing
measurable, and on which time grid (``--spacing``: t_i = (1 - i / steps) ** spacing)? Several checkpoints (the
saved steps of one training run) at one step count: that run's curve.
Every setting samples the same atom counts and noise (seed ``--seed``); novelty is against the QM9 training
SMILES (built once, cached) unless ``--no-novelty``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.checkpoint import load_config  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_molecule.config import SAMPLER_SPACING  # noqa: E402
from reed_molecule.loading import default_checkpoint, load_model  # noqa: E402
from reed_molecule.metrics import edm_metrics  # noqa: E402
from reed_molecule.sampler import sample_molecules  # noqa: E402

METRICS = ("atom_stable", "mol_stable", "validity", "valid_unique", "novelty", "bond_mol_stable", "connected_validity")


def _numbers(text: str, kind, flag: str) -> list:
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise SystemExit(f"{flag}: every value must be > 0, got {text!r}")
    return values


def evaluate(loaded, path: Path, train_step: int | None, steps: int, spacing: float, args,
             smiles: set[str] | None) -> dict:
    start = time.perf_counter()
    arr = sample_molecules(loaded, args.n, num_steps=steps, seed=args.seed, batch_size=args.batch_size,
                           device=args.device, spacing=spacing)
    seconds = time.perf_counter() - start
    rep = edm_metrics(arr["pos"], arr["atoms"], arr["mask"], smiles, arr["bonds"], arr["charges"])
    return {"checkpoint": str(path), "train_step": train_step, "steps": steps, "spacing": spacing,
            **{k: getattr(rep, k) for k in METRICS}, "ms_per_molecule": 1000 * seconds / args.n}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, help="checkpoint directories (default: the shipped model)")
    p.add_argument("--steps", default="25,50,100,250,500", help="comma-separated sampler step counts")
    p.add_argument("--spacing", default=str(SAMPLER_SPACING),
                   help="comma-separated sampler time grids: t_i = (1 - i / steps) ** spacing (1: uniform)")
    p.add_argument("-n", type=int, default=500, help="molecules per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250, help="molecules per sampling batch")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-novelty", action="store_true", help="skip novelty (no QM9 build needed)")
    p.add_argument("--cache", default=None, help="QM9 cache directory (training SMILES for novelty)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/molecule_sampling.json")
    args = p.parse_args(argv)
    step_counts, spacings = _numbers(args.steps, int, "--steps"), _numbers(args.spacing, float, "--spacing")
    if args.threads:
        torch.set_num_threads(args.threads)
    smiles = None
    if not args.no_novelty:
        from reed_molecule.qm9 import training_smiles

        smiles = training_smiles(args.cache)
    paths = [Path(c) for c in args.checkpoint] if args.checkpoint else [default_checkpoint()]
    result = {"n": args.n, "seed": args.seed, "device": args.device, "threads": torch.get_num_threads(), "rows": []}
    for path in paths:
        loaded, train_step = load_model(path, device=args.device), load_config(path).get("step")
        sample_molecules(loaded, 4, num_steps=2, device=args.device)  # warm-up: first-call costs stay out of the timing
        for steps, spacing in itertools.product(step_counts, spacings):
            row = evaluate(loaded, path, train_step, steps, spacing, args, smiles)
            result["rows"].append(row)
            print(f"[{path.name}] {steps} steps, spacing {spacing:g}: " + ", ".join(
                f"{k} {row[k]:.2f}" for k in (*METRICS, "ms_per_molecule") if row[k] is not None), flush=True)
            write_json(result, args.out)  # after every setting: a killed run keeps what it measured
    header = ["checkpoint", "train step", "sampler steps", "spacing", *METRICS, "ms/molecule"]
    print(format_table(header, [[Path(r["checkpoint"]).name, r["train_step"], r["steps"], r["spacing"],
                                 *(r[k] for k in METRICS), r["ms_per_molecule"]] for r in result["rows"]]))
    return result


if __name__ == "__main__":
    main()
