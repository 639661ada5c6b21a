"""Regularising protein training against over-fitting, measured where it shows on 2 CPU cores:
``uv run benchmarks/protein_regularisation.py [--settings fixed,random+noise0.2] [--train-chains 400]``.

The paper-size model over-fits the project's 3,450 training chains after about 15 epochs (the GPU benchmark: the
test perplexity rises from step 1,500 and recovery stalls). GPU time is scarce, so this script measures the
levers in a data-limited setting where the same happens within CPU minutes: a model trained for many epochs on
a fixed random subset of the training chains (the same subset, seed, initial weights and chain order for every
setting), scored at ``--evals`` points on the **validation** split (never test: this picks defaults) and on the
training chains themselves, whose gap to validation is the over-fitting. A setting is ``+``-joined tokens:

* ``fixed`` / ``random``: one crop window per chain, or a window drawn anew at every step (``--crop``);
* ``noiseX``: X Å of Gaussian backbone noise per step (``--backbone-noise X``; ProteinMPNN trains with 0.2);
* ``cosine``: the learning rate decays to 0 over the run (``--lr-decay cosine``);
* ``vanilla`` / ``repa`` / ``reed``: the method (default ``--method``), with ``--teachers``' teachers;
* ``alignX``: the alignment coefficient lambda (``--align-coefficient X``; the preset's 0.2 otherwise);
* ``hold``: REED's alignment weight held at 1 to the end (the curriculum's generative warm-up kept, its cosine
  decay of the alignment dropped);
* ``distillX``: ProteinMPNN's structure-only amino-acid profile distilled into the prediction at weight X
  relative to the data term (``--distill X``; any method, vanilla included);
* ``cdistillX``: the same with ProteinMPNN's distribution given the residues visible at each step
  (``--distill X --distill-from conditional``: one ProteinMPNN pass per step).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table,
    fresh_dir,
    plot_curves,
    same_settings,
    steps_to_reach,
    train_with_evals,
    value_at,
    write_json,
)
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_protein.data import ChainSet  # noqa: E402
from reed_protein.evaluation import evaluate  # noqa: E402
from reed_protein.presets import default_cache_dir, protein_trainer, teacher_preset, train_ids  # noqa: E402

METRICS = ("valid_recovery", "valid_perplexity", "train_recovery", "train_perplexity")


def parse_setting(text: str, method: str = "vanilla") -> dict:
    """``random+noise0.2+cosine+reed+align1`` -> protein_trainer keywords (crop, backbone_noise, lr_decay, method,
    align_coefficient)."""
    kw = {"crop": "fixed", "backbone_noise": 0.0, "lr_decay": "constant", "method": method}
    for token in text.split("+"):
        if token in ("fixed", "random"):
            kw["crop"] = token
        elif token == "cosine":
            kw["lr_decay"] = "cosine"
        elif token == "hold":
            kw["align_decay"] = "constant"
        elif token in ("vanilla", "repa", "reed"):
            kw["method"] = token
        elif m := re.fullmatch(r"mpnn(\d{3})", token):
            kw["mpnn_noise"] = m.group(1)
        elif m := re.fullmatch(r"(noise|align|distill|cdistill)(\d+(?:\.\d+)?)", token):
            key = {"noise": "backbone_noise", "align": "align_coefficient", "distill": "distill",
                   "cdistill": "distill"}[m.group(1)]
            kw[key] = float(m.group(2))
            if m.group(1) == "cdistill":
                kw["distill_from"] = "conditional"
        else:
            raise SystemExit(f"--settings: {token!r} in {text!r} is not fixed, random, cosine, vanilla, repa, reed, "
                             "hold, noiseX (X in Å), alignX, distillX, cdistillX or mpnnNNN (ProteinMPNN v_48_NNN)")
    return kw


def subset(ids: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``n`` of ``ids`` drawn without replacement by ``seed`` (all of them when n is None or too large)."""
    if n is None or n >= len(ids):
        return np.asarray(ids)
    return np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--settings", default="fixed,random+noise0.2", help="comma-separated settings")
    p.add_argument("--method", choices=("vanilla", "repa", "reed"), default="vanilla")
    p.add_argument("--preset", default="tiny", help="model preset")
    p.add_argument("--train-chains", type=int, default=400, help="training chains (a fixed random subset; 0: all)")
    p.add_argument("--epochs", type=float, default=40.0, help="passes over the training chains")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256, help="training crop length")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--evals", type=int, default=8, help="evaluation points per setting")
    p.add_argument("--eval-chains", type=int, default=100,
                   help="validation chains scored (a fixed random subset; 0: all 431), and as many training chains")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teachers", choices=("mpnn", "inproject"), default="mpnn", help="for --method repa / reed")
    p.add_argument("--cache-dir", default=str(default_cache_dir()))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/protein_regularisation", help="output prefix (.json, .png)")
    p.add_argument("--merge", default=None,
                   help="an earlier result JSON with the same settings: its rows come first (the first is the reference)")
    p.add_argument("--reference", default=None,
                   help="the setting the others are compared with (default: the first row)")
    p.add_argument("--report", default=None, metavar="JSON", help="re-print the tables of a result JSON; no training")
    args = p.parse_args(argv)
    if args.report:
        results = json.loads(Path(args.report).read_text())
        report(results, Path(args.report).with_suffix(""), args.reference)
        return results
    settings = {s: parse_setting(s, args.method) for s in args.settings.split(",") if s}
    chains = ChainSet()
    train = subset(train_ids(chains), args.train_chains or None, seed=0)
    valid = subset(chains.split("valid"), args.eval_chains or None, seed=1)
    seen = subset(train, args.eval_chains or None, seed=2)
    steps = max(1, round(args.epochs * len(train) / args.batch_size))
    eval_at = sorted({max(1, round(steps * (k + 1) / args.evals)) for k in range(args.evals)})
    config = {k: getattr(args, k) for k in ("method", "preset", "batch_size", "max_length", "lr", "sample_steps",
                                            "seed", "teachers", "device")}
    results = {"config": {**config, "train_chains": len(train), "valid_chains": len(valid), "steps": steps,
                          "epochs": steps * args.batch_size / len(train), "eval_at": eval_at}, "settings": {}}
    if args.merge:
        prev = json.loads(Path(args.merge).read_text())
        if not same_settings(prev["config"], results["config"]):
            raise SystemExit(f"{args.merge}: run with different settings; cannot merge")
        results["settings"] = {n: r for n, r in prev["settings"].items() if n not in settings}
    out = Path(args.out)
    print(f"{len(settings)} settings x {steps} steps ({results['config']['epochs']:.1f} epochs of {len(train)} "
          f"chains, batch {args.batch_size}, crops of {args.max_length}); scored on {len(valid)} validation and "
          f"{len(seen)} training chains", flush=True)

    def score(trainer) -> dict:
        model = trainer.ema_model()
        kw = {"num_steps": args.sample_steps, "seed": args.seed, "device": args.device}
        v, t = evaluate(model, chains, valid, **kw), evaluate(model, chains, seen, **kw)
        return {"valid_recovery": v["recovery"], "valid_perplexity": v["perplexity"],
                "train_recovery": t["recovery"], "train_perplexity": t["perplexity"]}

    for name, kw in settings.items():
        kw = dict(kw)
        if decay := kw.pop("align_decay", None):
            base = teacher_preset(args.teachers, distill=kw.get("distill", 0.0),
                                  distill_from=kw.get("distill_from", "profile"),
                                  mpnn_noise=kw.get("mpnn_noise", "020"))
            kw["preset"] = replace(base, curriculum=replace(base.curriculum, decay=decay))
        trainer = protein_trainer(kw.pop("method"), chains, fresh_dir(out.parent / f"{out.name}_runs" / name),
                                  model=args.preset, steps=steps, batch_size=args.batch_size,
                                  max_length=args.max_length, lr=args.lr, seed=args.seed, ids=train,
                                  teachers=args.teachers, progress=False, device=args.device,
                                  cache_dir=args.cache_dir, **kw)
        curve, seconds = train_with_evals(trainer, steps, eval_at, score, label=name)
        results["settings"][name] = {"kwargs": settings[name], "curve": curve, "steps_per_s": steps / seconds}
        write_json(results, out.with_suffix(".json"))  # partial results survive an interrupted run
    report(results, out, args.reference)
    return results


def report(results: dict, out: Path, reference: str | None = None) -> None:
    """The curves, then one summary row per setting (the best validation point, the last one, the gap), then each
    setting against ``reference`` (default: the first): the difference at every evaluation step, and the step at
    which it first reaches the reference's best validation recovery (interpolated; the ratio is the speed-up)."""
    rows = [[n, c["step"], *(c[k] for k in METRICS)] for n, r in results["settings"].items() for c in r["curve"]]
    print()
    print(format_table(["setting", "step", "valid recov %", "valid ppl", "train recov %", "train ppl"], rows))
    summary = []
    for n, r in results["settings"].items():
        best = max(r["curve"], key=lambda c: c["valid_recovery"])
        low = min(r["curve"], key=lambda c: c["valid_perplexity"])
        last = r["curve"][-1]
        summary.append([n, best["valid_recovery"], best["step"], last["valid_recovery"], low["valid_perplexity"],
                        last["valid_perplexity"], last["train_recovery"] - last["valid_recovery"], r["steps_per_s"]])
    print()
    print(format_table(["setting", "best valid recov %", "at step", "last valid recov %", "lowest valid ppl",
                        "last valid ppl", "last train - valid recov", "steps/s"], summary))
    name = reference or next(iter(results["settings"]))
    if name not in results["settings"]:
        raise SystemExit(f"--reference: no setting {name!r} in {sorted(results['settings'])}")
    ref = [(d["step"], d["valid_recovery"]) for d in results["settings"][name]["curve"]]
    peak_step, peak = max(ref, key=lambda sv: sv[1])
    for n, r in results["settings"].items():
        if n == name:
            continue
        curve = [(c["step"], c["valid_recovery"]) for c in r["curve"]]
        gains = [v - value_at(ref, s) for s, v in curve]
        reached = steps_to_reach(curve, peak)
        when = (f"reaches {name}'s best {peak:.2f} (step {peak_step}) at step {reached:g}: {peak_step / reached:.2f}x"
                if reached else f"never reaches {name}'s best {peak:.2f}")
        print(f"{n} - {name}: valid recovery " + " / ".join(f"{g:+.2f}" for g in gains)
              + f" points at the evaluation steps; {when}")
    write_json(results, out.with_suffix(".json"))
    curves = {n: {k: [(c["step"], c[k]) for c in r["curve"]] for k in METRICS} for n, r in results["settings"].items()}
    plot_curves(curves, METRICS, out.with_suffix(".png"),
                f"regularisation, {results['config']['preset']} preset, {results['config']['train_chains']} chains")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
