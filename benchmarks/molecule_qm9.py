"""Vanilla vs REPA-style vs REED on QM9 3-D molecule generation: ``uv run benchmarks/molecule_qm9.py``.

All methods share the code path, the seed, the initial weights, the data order and the step budget. Each is
evaluated at ``--evals`` checkpoints (EMA weights): ancestral sampling and EDM's metrics (novelty against the
rebuilt training split, plus stability from the model's own bonds), and the validation loss: the training
objective on fixed validation molecules at a fixed grid of times with fixed noise (identical for every method
and step; no sampling noise, so small differences show). Prints a table per method and step, the training
steps/s, and the speed-ups: the steps a method needs to reach vanilla's (and REPA-style's) value at the end of
the budget and at 50 % / 75 % of it, interpolated on the curves. ``--seeds 0,1`` repeats every method per seed
and reports the mean curve, the seed-to-seed spread and the speed-up per seed. A method ``reed:graph2d`` (or
``repa:encoder3d``, ``reed:graph2d+encoder3d``) uses only the named teachers: one ablation row per teacher.
Writes JSON and a PNG of the curves.

The default (tiny preset, 2,000 steps, 8 evaluations of 200 molecules) takes about 22 minutes on 2 idle CPU
cores once the QM9 build is cached; ``--full`` is the paper-scale setting for a GPU.

On a machine with torch only (no RDKit, no qm9pack), ``--pack`` trains and validates from the compact training
pack (``reed-molecule pack`` writes it) and ``--samples-dir DIR`` saves every evaluation's samples there instead of
scoring them; back on a machine with RDKit, ``--score RESULT.json`` computes their EDM metrics and reports::

    uv run benchmarks/molecule_qm9.py --full --pack --samples-dir benchmarks/results/molecule_qm9_full_samples \
        --out benchmarks/results/molecule_qm9_full                        # GPU machine
    uv run benchmarks/molecule_qm9.py --score benchmarks/results/molecule_qm9_full.json   # here

``--time-budget 9m`` stops cleanly (checkpoint and ``<out>.partial.json``) once the budget is spent; the same
command with ``--resume`` continues exactly where it stopped (curves and losses identical to an unbroken run), so
a long ``--full`` runs in chunks, as on a preemptible machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table,
    fresh_dir,
    keep_checkpoint,
    mean_curve,
    merge_results,
    plot_curves,
    report_speedups,
    same_settings,
    train_with_evals,
    write_json,
)
from reed_core import METHODS  # noqa: E402
from reed_core.cli import HelpFormatter, parse_duration  # noqa: E402
from reed_molecule.data import QM9Dataset  # noqa: E402
from reed_molecule.loading import LoadedModel  # noqa: E402
from reed_molecule.metrics import edm_metrics  # noqa: E402
from reed_molecule.pack import default_pack_path  # noqa: E402
from reed_molecule.presets import PRESET, VAL_TIMES, molecule_trainer, validation_batches, validation_loss  # noqa: E402
from reed_molecule.process import check_time_power  # noqa: E402
from reed_molecule.qm9 import training_smiles  # noqa: E402
from reed_molecule.sampler import sample_molecules  # noqa: E402

METRICS = ("atom_stable", "mol_stable", "validity", "valid_unique", "novelty", "bond_mol_stable")
SAMPLE_ARRAYS = ("pos", "atoms", "charges", "bonds", "mask")
LEGACY = {"sample_spacing": 1.0}  # what results written before the setting existed used (merge / resume)


def method_preset(method: str):
    """The domain preset of ``method`` (``reed``, or ``reed:graph2d``: REED with only the named teachers)."""
    base, _, own = method.partition(":")
    names = [s.name for s in PRESET.latents]
    wanted = own.split("+") if own else None
    if base not in METHODS or (wanted is not None and (base == "vanilla" or not set(wanted) <= set(names))):
        raise SystemExit(f"--methods: {method!r} is not METHOD[:TEACHER[+TEACHER]] with METHOD in {sorted(METHODS)} "
                         f"and TEACHER in {names} (vanilla has none)")
    if wanted is None:
        return PRESET
    return replace(PRESET, latents=tuple(s for s in PRESET.latents if s.name in wanted), repa_latents=tuple(wanted))


def score(arr: dict, train_smiles: set[str]) -> dict:
    """EDM's metrics (RDKit) of sampled molecule arrays."""
    rep = edm_metrics(arr["pos"], arr["atoms"], arr["mask"], train_smiles, arr["bonds"], arr["charges"])
    return {k: getattr(rep, k) for k in METRICS}


def evaluate(trainer, n: int, sample_steps: int, seed: int, train_smiles: set[str] | None, device: str, val: list,
             samples: Path | None = None, spacing: float = 1.0) -> dict:
    """Validation loss and EDM metrics of the EMA weights; with ``samples`` (a file name) the samples are saved there
    and their metrics left to ``--score`` (None here)."""
    model = trainer.ema_model()
    val_loss = validation_loss(model, trainer.objective.process, val, device)
    hist = np.asarray(trainer.model_config["atom_histogram"], float)
    loaded = LoadedModel(model, trainer.objective.process, hist, trainer.model_config)
    start = time.perf_counter()
    arr = sample_molecules(loaded, n, num_steps=sample_steps, seed=seed, batch_size=min(n, 250), device=device,
                           spacing=spacing, noise_scale=1.0)  # the exact ancestral step, whatever `sample`'s default
    seconds = time.perf_counter() - start
    if samples is not None:
        samples.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(samples, **{k: arr[k] for k in SAMPLE_ARRAYS})
        out = {k: None for k in METRICS} | {"samples": samples.name}
    else:
        out = score(arr, train_smiles)
    out["val_loss"], out["sample_seconds"] = val_loss, seconds
    return out


def score_saved(results: dict, samples_dir: Path, smiles: set[str]) -> None:
    """Fill in the EDM metrics (novelty against ``smiles``) of every saved sample file named in ``results`` (each
    seed's curve), then the mean curves."""
    for m, r in results["methods"].items():
        for curve in r["seed_curves"].values():
            for row in curve:
                if name := row.get("samples"):
                    path = samples_dir / name
                    if not path.is_file():
                        raise SystemExit(f"{path}: sample file of {m} step {row['step']} is missing")
                    with np.load(path, allow_pickle=False) as z:
                        row.update(score({k: z[k] for k in SAMPLE_ARRAYS}, smiles))
                    print(f"[score] {m} step {row['step']}: " + ", ".join(f"{k} {row[k]:.2f}" for k in METRICS if row[k] is not None),
                          flush=True)
        curves = list(r["seed_curves"].values())
        r["curve"] = mean_curve(curves) if len(curves) > 1 else curves[0]


def report(results: dict, out: Path) -> None:
    """Print the table and speed-ups of ``results``, write JSON and PNG next to ``out``."""
    header = ["method", "step", "atom stab %", "mol stab %", "valid %", "V x U %", "novel %", "bond mol stab %",
              "val loss", "train loss"]
    keys = (*METRICS, "val_loss")

    def cell(c, k):  # the mean, with the seed-to-seed spread (max - min) when there are several seeds
        v, spread = c.get(k), c.get("spread", {}).get(k)
        if v is None or not spread:
            return v
        return f"{v:.3f}±{spread:.3f}" if k == "val_loss" else f"{v:.2f}±{spread:.2f}"

    rows = [[m, c["step"], *(cell(c, k) for k in keys), c["denoise_loss"]]
            for m, r in results["methods"].items() for c in r["curve"]]
    print()
    print(format_table(header, rows))
    seeds = results["config"].get("seeds", [results["config"].get("seed")])
    if len(seeds) > 1:
        print(f"mean over seeds {seeds}; ± is the seed-to-seed spread (max - min)")
    print()
    print(format_table(["method", "steps/s", "params"],
                       [[m, r["steps_per_s"], r["params"]] for m, r in results["methods"].items()]))
    scored = [k for k in ("val_loss", "atom_stable", "validity", "mol_stable")  # (unscored samples: None)
              if all(c.get(k) is not None for r in results["methods"].values() for c in r["curve"])]
    report_speedups(results, scored, lower_is_better=("val_loss",))
    if unscored := [m for m, r in results["methods"].items() if any(
            c.get("samples") and c.get("atom_stable") is None for cv in r.get("seed_curves", {}).values() for c in cv)]:
        print(f"the samples of {', '.join(unscored)} are not scored yet: --score this JSON where RDKit is installed")
    write_json(results, out.with_suffix(".json"))
    curves = {m: {k: [(c["step"], c.get(k)) for c in r["curve"]] for k in keys} for m, r in results["methods"].items()}
    plot_curves(curves, ("val_loss", "atom_stable", "validity", "bond_mol_stable"), out.with_suffix(".png"),
                f"QM9, {results['config']['preset']} preset, batch {results['config']['batch_size']}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def denoiser_params(preset: str) -> int:
    """Parameters of the denoiser of model ``preset`` (the same for every method: alignment adds projectors only)."""
    from reed_molecule.config import MODEL_PRESETS
    from reed_molecule.model import EQGATDenoiser

    return sum(q.numel() for q in EQGATDenoiser(MODEL_PRESETS[preset]).parameters())


def summarise(runs: dict[int, dict], params: int) -> dict:
    """A method's entry from its runs by seed: the mean curve (with the spread), every seed's curve, mean steps/s."""
    return {"curve": mean_curve([r["curve"] for r in runs.values()]) if len(runs) > 1 else next(iter(runs.values()))["curve"],
            "steps_per_s": sum(r["steps_per_s"] for r in runs.values()) / len(runs), "params": params,
            "seed_curves": {str(k): r["curve"] for k, r in runs.items()},
            "train_seconds": sum(r["train_seconds"] for r in runs.values())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 2000; --full 100000)")
    p.add_argument("--batch-size", type=int, default=None, help="molecules per step (default 32; --full 64)")
    p.add_argument("--preset", default=None, help="model preset (default tiny; --full paper)")
    p.add_argument("--evals", type=int, default=8, help="number of evaluation checkpoints per method")
    p.add_argument("--eval-samples", type=int, default=None, help="molecules sampled per evaluation (default 200; --full 1000)")
    p.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default 50; --full 500)")
    p.add_argument("--sample-spacing", type=float, default=1.0, metavar="P",
                   help="sampler time grid t_i = (1 - i / steps) ** P (default 1, uniform: the grid of the recorded "
                        "results; `reed-molecule sample` defaults to 2)")
    p.add_argument("--val-molecules", type=int, default=512, help="validation molecules of the validation loss")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each method runs once per seed")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated methods (vanilla, repa, reed), each optionally :TEACHER[+TEACHER] (graph2d, encoder3d)")
    p.add_argument("--full", action="store_true", help="paper-scale setting (GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    p.add_argument("--cache", default=None, help="data/feature cache directory")
    p.add_argument("--out", default="benchmarks/results/molecule_qm9", help="output prefix (.json, .png) and run dirs")
    p.add_argument("--keep-checkpoint", default=None, help="copy the final REED checkpoint (first seed) here")
    p.add_argument("--merge", nargs="*", default=(), help="result JSONs of other methods run with the same settings")
    p.add_argument("--report", default=None, help="re-print table and speed-ups of an earlier result JSON; no training")
    p.add_argument("--pack", nargs="?", const=str(default_pack_path()), default=None,
                   help="train and validate from the compact QM9 training pack (numpy only: no RDKit, no qm9pack; "
                        "its default path if given bare)")
    p.add_argument("--samples-dir", default=None,
                   help="save every evaluation's samples here (.npz) and leave their RDKit metrics to --score")
    p.add_argument("--time-budget", default=None,
                   help="stop cleanly after this much wall time (e.g. 9m), checkpointed; --resume continues")
    p.add_argument("--resume", action="store_true",
                   help="continue the run of <out>.partial.json (same settings): finished methods and seeds are kept, "
                        "the interrupted one resumes from its checkpoint")
    p.add_argument("--score", default=None,
                   help="compute the metrics of the samples a --samples-dir run saved (its result JSON; the samples "
                        "from --samples-dir or the directory the run recorded), write the JSON back and report")
    args = p.parse_args(argv)
    if args.report or args.score:
        import json

        path = args.report or args.score
        results = json.loads(Path(path).read_text())
        seeds = results["config"].get("seeds", [results["config"].get("seed")])
        for method, runs in results.pop("running", {}).items():  # a killed run: its methods that ran every seed
            if len(runs) == len(seeds) and all(r.get("done", True) for r in runs.values()):
                results["methods"][method] = summarise({int(k): r for k, r in runs.items()},
                                                       denoiser_params(results["config"]["preset"]))
        if args.score:
            score_saved(results, Path(args.samples_dir or results["samples_dir"]), training_smiles(args.cache))
        report(results, Path(path.removesuffix(".partial.json").removesuffix(".json")))
        return results
    full = args.full
    steps = args.steps or (100_000 if full else 2000)
    batch = args.batch_size or (64 if full else 32)
    preset = args.preset or ("paper" if full else "tiny")
    n_eval = args.eval_samples or (1000 if full else 200)
    sample_steps = args.sample_steps or (500 if full else 50)
    try:
        check_time_power(args.sample_spacing, "--sample-spacing")
    except ValueError as e:
        p.error(str(e))
    methods = [m for m in args.methods.split(",") if m]
    presets = {m: method_preset(m) for m in methods}
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    logging.basicConfig(level=logging.WARNING)

    ds = QM9Dataset("train", args.cache, pack=args.pack)
    samples_dir = Path(args.samples_dir) if args.samples_dir else None
    train_smiles = None if samples_dir else training_smiles(args.cache)  # (RDKit and qm9pack)
    val = validation_batches(args.cache, args.val_molecules, 256, seed=0, pack=args.pack)
    eval_at = sorted({max(1, round(steps * (k + 1) / args.evals)) for k in range(args.evals)})
    results: dict = {"config": {"steps": steps, "batch_size": batch, "preset": preset, "eval_samples": n_eval,
                                "sample_steps": sample_steps, "sample_spacing": args.sample_spacing, "lr": args.lr,
                                "seeds": seeds, "device": args.device,
                                "train_molecules": len(ds), "val_molecules": args.val_molecules,
                                "val_times": VAL_TIMES, "eval_at": eval_at} | ({"data": "pack"} if args.pack else {}),
                     "methods": {}}
    if samples_dir:
        results["samples_dir"] = str(samples_dir)
    out = Path(args.out)
    partial = out.with_suffix(".partial.json")
    running: dict = {}
    if args.resume:
        import json

        if not partial.is_file():
            raise SystemExit(f"--resume: no {partial} to continue")
        prev = json.loads(partial.read_text())
        if not same_settings({**LEGACY, **prev["config"]}, results["config"]):
            raise SystemExit(f"--resume: {partial} was run with different settings")
        results["methods"], running = prev["methods"], prev.get("running", {})
    deadline = time.monotonic() + parse_duration(args.time_budget) if args.time_budget else None
    for method in methods:
        if method in results["methods"]:
            continue  # finished before a resume
        runs = {int(k): r for k, r in running.get(method, {}).items()}
        for seed in seeds:
            prev_run = runs.get(seed)
            if prev_run is not None and prev_run["done"]:
                continue
            tag = f"{method.replace(':', '_')}_seed{seed}"
            run_dir = out.parent / f"{out.name}_runs" / tag
            trainer = molecule_trainer(method.partition(":")[0], ds, run_dir if prev_run else fresh_dir(run_dir),
                                       model=preset, steps=steps, batch_size=batch, lr=args.lr, seed=seed,
                                       cache=args.cache, progress=False, device=args.device, preset=presets[method])
            if prev_run is not None and (not trainer.resume() or trainer.step != prev_run["step"]):
                raise SystemExit(f"--resume: {run_dir} has no checkpoint at step {prev_run['step']}")
            print(f"[{method} seed {seed}] training {steps} steps (batch {batch}, preset {preset}) from step "
                  f"{trainer.step} ...", flush=True)
            losses = list(prev_run["losses"]) if prev_run else []
            curve, train_seconds = train_with_evals(
                trainer, steps, eval_at, lambda tr, s=seed, tag=tag: evaluate(
                    tr, n_eval, sample_steps, s + 1, train_smiles, args.device, val,
                    samples_dir / f"{tag}_step{tr.step}.npz" if samples_dir else None, spacing=args.sample_spacing),
                label=f"{method} seed {seed}", deadline=deadline, curve=prev_run["curve"] if prev_run else (),
                seconds=prev_run["train_seconds"] if prev_run else 0.0, losses=losses)
            trainer.save()
            done = trainer.step >= steps
            if done and method == "reed" and seed == seeds[0] and args.keep_checkpoint:
                keep_checkpoint(run_dir, args.keep_checkpoint)
            runs[seed] = {"curve": curve, "steps_per_s": trainer.step / train_seconds, "train_seconds": train_seconds,
                          "step": trainer.step, "done": done, "losses": losses[-50:]}
            write_json({**results, "running": {method: runs}}, partial)  # what a killed or budgeted run leaves
            if not done:
                print(f"time budget reached at {method} seed {seed} step {trainer.step}; continue with the same "
                      f"arguments and --resume ({partial})", flush=True)
                return results
        results["methods"][method] = summarise(runs, denoiser_params(preset))
        write_json({**results, "running": {}}, partial)
    merge_results(results, args.merge, order=METHODS, legacy=LEGACY)
    report(results, out)
    return results


if __name__ == "__main__":
    main()
