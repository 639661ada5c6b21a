"""Image generation: vanilla SiT vs REPA-style (EfficientNet-Lite0 patch tokens) vs REED (patch tokens + the
caption / image embedding, with the paper's curriculum), identical seed, initialisation, data order and budget.

At each of ``--evals`` checkpoints the EMA model draws ``--num-samples`` class-balanced samples (Euler ODE,
``--sample-steps``) scored against the held-out images on the in-project classifier's features (FID_classifier,
k-NN precision / recall with k = 3, class accuracy of the samples) and on EfficientNet-Lite0 pooled features
(FID_effnet). The speed-up is the step at which a method reaches vanilla's final FID_classifier, interpolated on
its curve. Writes a JSON, a PNG of the curves and one PNG sample grid per method. ``hybrid`` (opt-in) is REED
trained as the variational hybrid (both latents condition the denoiser w.p. A_t), sampled on its own projected
z_hat; ``--merge`` adds the curves of another result JSON run with the same settings.

    uv run benchmarks/image_generation.py            # default: tiny SiT on MNIST 5k, 2 CPU cores, ~25 min
    uv run benchmarks/image_generation.py --full     # GPU: SiT-S/2, 20k steps, batch 256
    uv run benchmarks/image_generation.py --methods hybrid --out benchmarks/results/image_generation_hybrid \
        --merge benchmarks/results/image_generation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, fresh_dir, plot_curves, speedup, train_with_evals, write_json  # noqa: E402
from reed_image.data import load_images, to_tensor  # noqa: E402
from reed_image.io import save_grid  # noqa: E402
from reed_image.metrics import default_classifier, sample_metrics  # noqa: E402
from reed_image.presets import PRESETS, image_trainer, trainer_samples  # noqa: E402

METHODS = ("vanilla", "repa", "reed", "hybrid")
LABELS = {"vanilla": "vanilla", "repa": "REPA-style", "reed": "REED", "hybrid": "REED hybrid (self z)"}


def evaluate(trainer, real: torch.Tensor, classifier, effnet, args) -> dict:
    model = trainer.ema_model()
    t0 = time.perf_counter()
    x, labels = trainer_samples(trainer, model, args.num_samples, steps=args.sample_steps, cfg=args.cfg, seed=args.seed)
    seconds = time.perf_counter() - t0
    out = sample_metrics(x.cpu(), labels.cpu(), real, classifier, extra={"effnet": effnet} if effnet else None)
    return {**out, "sample_seconds": seconds, "_samples": x[: 10 * model.cfg.num_classes].cpu()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 1200; --full 20000)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 64; --full 256)")
    p.add_argument("--model", default=None, help="SiT preset (default tiny; --full S/2)")
    p.add_argument("--evals", type=int, default=6, help="evaluation checkpoints per method")
    p.add_argument("--num-samples", type=int, default=500, help="samples per evaluation")
    p.add_argument("--sample-steps", type=int, default=25, help="Euler steps per sample")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale of the evaluation samples")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3; --full 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed shared by all methods")
    p.add_argument("--methods", default="vanilla,repa,reed", help="comma-separated subset of vanilla,repa,reed,hybrid")
    p.add_argument("--merge", nargs="*", default=(), help="result JSONs of other methods run with the same settings")
    p.add_argument("--data", default=None, help="image set (default: the embedded MNIST 5k)")
    p.add_argument("--no-effnet-fid", action="store_true", help="skip FID on EfficientNet-Lite0 features")
    p.add_argument("--full", action="store_true", help="paper-like setting (GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default=".cache/reed-image", help="where teacher features are cached")
    p.add_argument("--out", default="benchmarks/results/image_generation", help="output prefix")
    args = p.parse_args(argv)
    steps = args.steps or (20000 if args.full else 1200)
    batch = args.batch_size or (256 if args.full else 64)
    model = args.model or ("S/2" if args.full else "tiny")
    lr = args.lr or (1e-4 if args.full else 1e-3)
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        p.error(f"unknown methods {sorted(unknown)}")
    torch.set_float32_matmul_precision("high")
    train_set, held = load_images(args.data)
    real = to_tensor(held.images)
    classifier = default_classifier() if args.data is None else None
    if classifier is None:
        from reed_image.metrics import train_classifier

        classifier = train_classifier(to_tensor(train_set.images), torch.from_numpy(train_set.labels),
                                      train_set.num_classes)
    effnet = None
    if not args.no_effnet_fid:
        from reed_image.teachers import EfficientNetTeacher

        effnet = EfficientNetTeacher(granularity="pooled").features
    eval_at = sorted({max(1, round(steps * (k + 1) / args.evals)) for k in range(args.evals)})
    out = Path(args.out)
    results = {"settings": {"steps": steps, "batch_size": batch, "model": model, "lr": lr, "seed": args.seed,
                            "num_samples": args.num_samples, "sample_steps": args.sample_steps, "cfg": args.cfg,
                            "data": train_set.source, "eval_images": len(held), "device": args.device,
                            "threads": torch.get_num_threads()},
               "curves": {}, "steps_per_s": {}, "params": {}}
    for method in methods:
        print(f"[{method}] training {steps} steps (batch {batch}, SiT {model}) ...", flush=True)
        run_dir = fresh_dir(out.parent / f".runs/image_{method}")
        hybrid = method == "hybrid"
        trainer = image_trainer("reed" if hybrid else method, train_set, run_dir, model=model, steps=steps,
                                batch_size=batch, lr=lr, seed=args.seed, preset=PRESETS["hybrid" if hybrid else "paper"],
                                cache_dir=args.cache_dir, progress=False, device=args.device,
                                precision="bf16" if args.full else "fp32")
        samples = {}

        def ev(t, samples=samples):
            row = evaluate(t, real, classifier, effnet, args)
            samples["last"] = row.pop("_samples")
            return row

        curve, seconds = train_with_evals(trainer, steps, eval_at, ev, label=method)
        results["curves"][method] = curve
        results["steps_per_s"][method] = round(steps / seconds, 3)
        results["params"][method] = sum(p.numel() for p in trainer.model.parameters())
        save_grid(samples["last"], f"{out}_{method}_samples.png", nrow=10)
    for other in args.merge:
        prev = json.loads(Path(other).read_text())
        if {k: v for k, v in prev["settings"].items() if k != "threads"} != {
                k: v for k, v in results["settings"].items() if k != "threads"}:
            raise SystemExit(f"{other}: run with different settings; cannot merge")
        for key in ("curves", "steps_per_s", "params"):
            for m, v in prev[key].items():
                results[key].setdefault(m, v)
    for key in ("curves", "steps_per_s", "params"):
        results[key] = {m: results[key][m] for m in METHODS if m in results[key]}
    report(results, out)
    return results


def report(results: dict, out: Path) -> None:
    curves = results["curves"]
    keys = ["fid_classifier", "precision", "recall", "class_accuracy", "fid_effnet"]
    rows = [[LABELS[m], c["step"], *(c.get(k) for k in keys), c["denoise_loss"]] for m, cs in curves.items() for c in cs]
    print()
    print(format_table(["method", "step", "FID_clf", "precision", "recall", "class acc", "FID_effnet", "loss"], rows))
    print()
    print(format_table(["method", "steps/s", "params"],
                       [[LABELS[m], results["steps_per_s"][m], results["params"][m]] for m in curves]))
    results["speedup"] = {}
    if "vanilla" in curves:
        ref = [(c["step"], c["fid_classifier"]) for c in curves["vanilla"]]
        for m in curves:
            if m == "vanilla":
                continue
            s = speedup(ref, [(c["step"], c["fid_classifier"]) for c in curves[m]], lower_is_better=True)
            results["speedup"][m] = s
            print(f"speed-up {m} vs vanilla on FID_classifier: vanilla final {s['target']:.2f} at {s['reference_steps']} "
                  f"steps; {m} reaches it at {s['candidate_steps']} -> {s['speedup']}")
        if "repa" in curves and "reed" in curves:
            ref = [(c["step"], c["fid_classifier"]) for c in curves["repa"]]
            s = speedup(ref, [(c["step"], c["fid_classifier"]) for c in curves["reed"]], lower_is_better=True)
            results["speedup"]["reed_vs_repa"] = s
            print(f"speed-up reed vs repa on FID_classifier: repa final {s['target']:.2f}; reed reaches it at "
                  f"{s['candidate_steps']} -> {s['speedup']}")
    write_json(results, f"{out}.json")
    plot_curves({LABELS[m]: {k: [(c["step"], c.get(k)) for c in cs] for k in keys} for m, cs in curves.items()},
                keys, f"{out}.png", "SiT on " + results["settings"]["data"])
    print(f"wrote {out}.json, {out}.png and the sample grids")


if __name__ == "__main__":
    main()
