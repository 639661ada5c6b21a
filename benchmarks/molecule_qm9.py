"""Vanilla vs REPA-style vs REED on QM9 3-D molecule generation: ``uv run benchmarks/molecule_qm9.py``.

All three methods share the code path, the seed, the initial weights, the data order and the step budget.
Each is evaluated at several checkpoints (EMA weights; ancestral sampling; EDM metrics with novelty against the
rebuilt training split, plus stability from the model's own bonds). Prints a table per method and step, the
training steps/s, and the speed-up: vanilla's steps divided by the steps REED (and REPA) need to reach
vanilla's final molecule stability (and validity). Writes JSON and a PNG of the curves.

The default fits in about 20 minutes on 2 CPU cores (the tiny preset; far from converged); ``--full`` is
the paper-scale setting for a GPU.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table,
    fresh_dir,
    keep_checkpoint,
    plot_curves,
    speedup,
    train_with_evals,
    write_json,
)
from reed_core import METHODS  # noqa: E402
from reed_molecule.data import QM9Dataset  # noqa: E402
from reed_molecule.loading import LoadedModel  # noqa: E402
from reed_molecule.metrics import edm_metrics  # noqa: E402
from reed_molecule.presets import molecule_trainer  # noqa: E402
from reed_molecule.qm9 import training_smiles  # noqa: E402
from reed_molecule.sampler import sample_molecules  # noqa: E402

METRICS = ("atom_stable", "mol_stable", "validity", "valid_unique", "novelty", "bond_mol_stable")


def evaluate(trainer, n: int, sample_steps: int, seed: int, train_smiles: set[str], device: str) -> dict:
    model = copy.deepcopy(trainer.model)
    trainer.ema.copy_to(model)
    hist = np.asarray(trainer.model_config["atom_histogram"], float)
    loaded = LoadedModel(model.eval(), trainer.objective.process, hist, trainer.model_config)
    start = time.perf_counter()
    arr = sample_molecules(loaded, n, num_steps=sample_steps, seed=seed, batch_size=min(n, 250), device=device)
    seconds = time.perf_counter() - start
    rep = edm_metrics(arr["pos"], arr["atoms"], arr["mask"], train_smiles, arr["bonds"], arr["charges"])
    out = {k: getattr(rep, k) for k in METRICS}
    out["sample_seconds"] = seconds
    return out


def report(results: dict, out: Path) -> None:
    """Print the table and speed-ups of ``results``, write JSON and PNG next to ``out``."""
    methods = list(results["methods"])
    header = ["method", "step", "atom stab %", "mol stab %", "valid %", "V x U %", "novel %", "bond mol stab %", "loss"]
    rows = []
    for method, r in results["methods"].items():
        for c in r["curve"]:
            rows.append([method, c["step"], c["atom_stable"], c["mol_stable"], c["validity"], c["valid_unique"],
                         c["novelty"], c["bond_mol_stable"], c["denoise_loss"]])
    print()
    print(format_table(header, rows))
    print()
    print(format_table(["method", "steps/s", "params"],
                       [[m, r["steps_per_s"], r["params"]] for m, r in results["methods"].items()]))
    if "vanilla" in results["methods"]:
        ref = results["methods"]["vanilla"]["curve"]
        results["speedup"] = {}
        for m in [m for m in methods if m != "vanilla"]:
            cand = results["methods"][m]["curve"]
            results["speedup"][m] = {
                key: speedup([(c["step"], c[key]) for c in ref], [(c["step"], c[key]) for c in cand])
                for key in ("mol_stable", "validity", "atom_stable")
            }
            for key, s in results["speedup"][m].items():
                ratio = f"{s['speedup']:.2f}x" if s["speedup"] else s.get("note", "not reached within the budget")
                print(f"speed-up {m} vs vanilla on {key}: vanilla final {s['target']:.2f} at {s['reference_steps']} steps; "
                      f"{m} reaches it at {s['candidate_steps']} -> {ratio}")
    write_json(results, out.with_suffix(".json"))
    curves = {m: {k: [(c["step"], c[k]) for c in r["curve"]] for k in METRICS} for m, r in results["methods"].items()}
    plot_curves(curves, ("atom_stable", "mol_stable", "validity", "bond_mol_stable"), out.with_suffix(".png"),
                f"QM9, {results['config']['preset']} preset, batch {results['config']['batch_size']}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 600; --full 100000)")
    p.add_argument("--batch-size", type=int, default=None, help="molecules per step (default 32; --full 64)")
    p.add_argument("--preset", default=None, help="model preset (default tiny; --full paper)")
    p.add_argument("--evals", type=int, default=3, help="number of evaluation checkpoints per method")
    p.add_argument("--eval-samples", type=int, default=None, help="molecules sampled per evaluation (default 200; --full 1000)")
    p.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default 50; --full 500)")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed shared by all methods")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of vanilla,repa,reed")
    p.add_argument("--full", action="store_true", help="paper-scale setting (GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    p.add_argument("--cache", default=None, help="data/feature cache directory")
    p.add_argument("--out", default="benchmarks/results/molecule_qm9", help="output prefix (.json, .png) and run dirs")
    p.add_argument("--keep-checkpoint", default=None, help="copy the final REED checkpoint here")
    p.add_argument("--report", default=None, help="re-print table and speed-ups of an earlier result JSON; no training")
    args = p.parse_args(argv)
    if args.report:
        import json

        results = json.loads(Path(args.report).read_text())
        report(results, Path(args.report).with_suffix(""))
        return results
    full = args.full
    steps = args.steps or (100_000 if full else 600)
    batch = args.batch_size or (64 if full else 32)
    preset = args.preset or ("paper" if full else "tiny")
    n_eval = args.eval_samples or (1000 if full else 200)
    sample_steps = args.sample_steps or (500 if full else 50)
    methods = [m for m in args.methods.split(",") if m]
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)

    ds = QM9Dataset("train", args.cache)
    train_smiles = training_smiles(args.cache)
    eval_at = sorted({max(1, round(steps * (k + 1) / args.evals)) for k in range(args.evals)})
    results: dict = {"config": {"steps": steps, "batch_size": batch, "preset": preset, "eval_samples": n_eval,
                                "sample_steps": sample_steps, "lr": args.lr, "seed": args.seed, "device": args.device,
                                "train_molecules": len(ds), "eval_at": eval_at},
                     "methods": {}}
    out = Path(args.out)
    for method in methods:
        run_dir = fresh_dir(out.parent / f"{out.name}_runs" / method)
        trainer = molecule_trainer(method, ds, run_dir, model=preset, steps=steps, batch_size=batch, lr=args.lr,
                                   seed=args.seed, cache=args.cache, progress=False, device=args.device)
        print(f"[{method}] training {steps} steps (batch {batch}, preset {preset}) ...", flush=True)
        curve, train_seconds = train_with_evals(
            trainer, steps, eval_at, lambda tr: evaluate(tr, n_eval, sample_steps, args.seed + 1, train_smiles, args.device))
        trainer.save()
        if method == "reed" and args.keep_checkpoint:
            keep_checkpoint(run_dir, args.keep_checkpoint)
        results["methods"][method] = {"curve": curve, "steps_per_s": steps / train_seconds,
                                      "train_seconds": train_seconds,
                                      "params": sum(p.numel() for p in trainer.model.parameters())}

    report(results, out)
    return results


if __name__ == "__main__":
    main()
