"""EDM metrics of molecule checkpoints by sampler step count, with the sampling time per molecule:
``uv run benchmarks/molecule_sampling.py [--checkpoint DIR ...] [--steps 25,50,100,250,500] [--spacing 1,2]
[--noise-scale 1,0.8] [-n 500]``.

One checkpoint, several step counts: is the sampler's default the cheapest setting that loses nothing
measurable, on which time grid (``--spacing``: t_i = (1 - i / steps) ** spacing) and at which temperature of the
coordinates' steps (``--noise-scale``: the factor on their noise)? Several checkpoints (the
saved steps of one training run) at one step count: that run's curve.
Every setting samples the same atom counts and initial noise (seed ``--seed``); novelty is against the QM9 training
SMILES (built once, cached) unless ``--no-novelty``. Each row keeps its per-molecule outcomes (``per_molecule``: a
0/1 string per outcome, molecule k at position k), and every later setting of a checkpoint is compared with its
first one molecule by molecule: the paired difference of each rate and its standard error, tighter than two
independent rates' (the same atom counts and starting noise make the outcomes correlated). ``--pair-with`` adds
the rows of an earlier result file of the same seed, ``-n`` and batch size to that comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.checkpoint import load_config  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_molecule.config import (  # noqa: E402
    SAMPLER_NOISE_SCALE,
    SAMPLER_POSTERIOR,
    SAMPLER_POSTERIORS,
    SAMPLER_SPACING,
)
from reed_molecule.loading import default_checkpoint, load_model  # noqa: E402
from reed_molecule.metrics import MoleculeResults, evaluate_batch, summarise  # noqa: E402
from reed_molecule.process import check_noise_scale, check_time_power  # noqa: E402
from reed_molecule.sampler import sample_molecules  # noqa: E402

METRICS = ("atom_stable", "mol_stable", "validity", "valid_unique", "novelty", "bond_mol_stable", "connected_validity")
# the per-molecule outcomes kept for paired comparisons: name -> the rate in METRICS it makes up
OUTCOMES = {"mol_stable": "mol_stable", "valid": "validity", "bond_mol_stable": "bond_mol_stable",
            "connected": "connected_validity"}


def _numbers(text: str, kind, flag: str, check=check_time_power) -> list:
    try:
        values = [kind(v) for v in text.split(",")]
        for v in values:
            check(v, flag)  # finite and > 0 (noise scales: >= 0)
    except ValueError as err:
        raise SystemExit(f"{flag}: expected comma-separated numbers, got {text!r} ({err})") from None
    return values


def setting(row: dict) -> tuple:
    """(steps, spacing, noise scale, categorical posterior) of a row; rows written before the noise scale existed
    sampled at 1, rows written before the posterior option with the "proportional" form."""
    return row["steps"], row["spacing"], row.get("noise_scale", 1.0), row.get("posterior", "proportional")


def label(setting: tuple) -> str:
    steps, spacing, scale, posterior = setting
    return f"{steps} steps, spacing {spacing:g}, noise scale {scale:g}, {posterior} posterior"


def outcomes(res: MoleculeResults) -> dict[str, str]:
    """Per-molecule 0/1 outcomes as strings (molecule k at position k): EDM molecule stability (0 where undefined),
    validity, and with the model's own bonds, bond-aware stability and connected validity."""
    flags = {"mol_stable": res.mol_stable, "valid": np.array([s is not None for s in res.smiles], bool)}
    if res.bond_atoms_stable is not None:
        flags["bond_mol_stable"] = res.defined & (res.bond_atoms_stable == res.num_atoms)
        flags["connected"] = res.connected
    return {k: "".join("1" if x else "0" for x in np.asarray(v, bool)) for k, v in flags.items()}


def paired_difference(a: str, b: str) -> tuple[float, float]:
    """(mean of b - a, its standard error), in percentage points, of two 0/1 outcome strings of the same molecules:
    the paired comparison (the SE of the per-molecule differences, which carries the correlation of the two)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired outcomes need the same molecules: {len(a)} vs {len(b)}")
    d = np.frombuffer(b.encode(), np.uint8).astype(float) - np.frombuffer(a.encode(), np.uint8).astype(float)
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return 100.0 * float(d.mean()), 100.0 * float(se)


def paired_rows(rows: list[dict]) -> list[dict]:
    """Every row that has per-molecule outcomes, against the first such row of its checkpoint: the paired
    difference and SE of each outcome's rate."""
    first, out = {}, []
    for r in rows:
        if "per_molecule" not in r:
            continue
        ref = first.setdefault(r["checkpoint"], r)
        if ref is r:
            continue
        diffs = {k: paired_difference(ref["per_molecule"][k], r["per_molecule"][k])
                 for k in OUTCOMES if k in ref["per_molecule"] and k in r["per_molecule"]}
        out.append({"checkpoint": r["checkpoint"], "reference": setting(ref), "setting": setting(r), "diffs": diffs})
    return out


def evaluate(loaded, path: Path, train_step: int | None, steps: int, spacing: float, noise_scale: float, args,
             smiles: set[str] | None, posterior: str = SAMPLER_POSTERIOR) -> dict:
    start = time.perf_counter()
    arr = sample_molecules(loaded, args.n, num_steps=steps, seed=args.seed, batch_size=args.batch_size,
                           device=args.device, spacing=spacing, noise_scale=noise_scale, posterior=posterior)
    seconds = time.perf_counter() - start
    res = evaluate_batch(arr["pos"], arr["atoms"], arr["mask"], arr["bonds"], arr["charges"])
    rep = summarise(res, smiles)
    return {"checkpoint": str(path), "train_step": train_step, "steps": steps, "spacing": spacing,
            "noise_scale": noise_scale, "posterior": posterior,
            **{k: getattr(rep, k) for k in METRICS}, "ms_per_molecule": 1000 * seconds / args.n,
            "per_molecule": outcomes(res)}


def earlier_rows(path: str, args) -> list[dict]:
    """The rows of an earlier result file, if it sampled the same molecules (seed, -n, batch size)."""
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--pair-with {path}: cannot read a result file ({err})") from None
    same = {k: old.get(k) for k in ("n", "seed", "batch_size")}
    want = {"n": args.n, "seed": args.seed, "batch_size": args.batch_size}
    if same != want:
        raise SystemExit(f"--pair-with {path}: it sampled {same}, this run {want}: the molecules are not the same")
    return [r for r in old.get("rows", []) if "per_molecule" in r]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, help="checkpoint directories (default: the shipped model)")
    p.add_argument("--steps", default="25,50,100,250,500", help="comma-separated sampler step counts")
    p.add_argument("--spacing", default=str(SAMPLER_SPACING),
                   help="comma-separated sampler time grids: t_i = (1 - i / steps) ** spacing (1: uniform)")
    p.add_argument("--noise-scale", default=str(SAMPLER_NOISE_SCALE),
                   help="comma-separated factors on the coordinates' noise at every sampler step (1: exact)")
    p.add_argument("--posterior", default=SAMPLER_POSTERIOR,
                   help=f"comma-separated categorical reverse steps, of {', '.join(SAMPLER_POSTERIORS)}")
    p.add_argument("-n", type=int, default=500, help="molecules per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250, help="molecules per sampling batch")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-novelty", action="store_true", help="skip novelty (no QM9 build needed)")
    p.add_argument("--cache", default=None, help="QM9 cache directory (training SMILES for novelty)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/molecule_sampling.json")
    p.add_argument("--pair-with", default=None, metavar="JSON",
                   help="an earlier result file of the same seed, -n and batch size: its rows join the paired comparison")
    args = p.parse_args(argv)
    step_counts, spacings = _numbers(args.steps, int, "--steps"), _numbers(args.spacing, float, "--spacing")
    scales = _numbers(args.noise_scale, float, "--noise-scale", check_noise_scale)
    posteriors = args.posterior.split(",")
    if any(q not in SAMPLER_POSTERIORS for q in posteriors):
        raise SystemExit(f"--posterior: choose from {', '.join(SAMPLER_POSTERIORS)}, got {args.posterior!r}")
    earlier = earlier_rows(args.pair_with, args) if args.pair_with else []
    if args.threads:
        torch.set_num_threads(args.threads)
    smiles = None
    if not args.no_novelty:
        from reed_molecule.qm9 import training_smiles

        smiles = training_smiles(args.cache)
    paths = [Path(c) for c in args.checkpoint] if args.checkpoint else [default_checkpoint()]
    result = {"n": args.n, "seed": args.seed, "batch_size": args.batch_size, "device": args.device,
              "threads": torch.get_num_threads(), "rows": []}
    for path in paths:
        loaded, train_step = load_model(path, device=args.device), load_config(path).get("step")
        sample_molecules(loaded, 4, num_steps=2, device=args.device)  # warm-up: first-call costs stay out of the timing
        for steps, spacing, scale, posterior in itertools.product(step_counts, spacings, scales, posteriors):
            row = evaluate(loaded, path, train_step, steps, spacing, scale, args, smiles, posterior)
            result["rows"].append(row)
            print(f"[{path.name}] {label(setting(row))}: " + ", ".join(
                f"{k} {row[k]:.2f}" for k in (*METRICS, "ms_per_molecule") if row[k] is not None), flush=True)
            write_json(result, args.out)  # after every setting: a killed run keeps what it measured
    header = ["checkpoint", "train step", "sampler steps", "spacing", "noise scale", "posterior", *METRICS,
              "ms/molecule"]
    print(format_table(header, [[Path(r["checkpoint"]).name, r["train_step"], *setting(r),
                                 *(r[k] for k in METRICS), r["ms_per_molecule"]] for r in result["rows"]]))
    result["paired"] = paired_rows(earlier + result["rows"])
    for c in result["paired"]:
        print(f"[{Path(c['checkpoint']).name}] {label(c['setting'])} vs {label(c['reference'])} (same molecules, "
              "paired): " + ", ".join(
                  f"{OUTCOMES[k]} {d:+.1f} ± {se:.1f}" for k, (d, se) in c["diffs"].items()))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
