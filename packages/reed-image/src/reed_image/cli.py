"""``reed-image``: train SiT with REED guidance, sample class-conditional images, score images from any model.

    reed-image sample --class 3 --num 64 --cfg 1.5 --grid out.png      # the shipped model, a PNG grid
    reed-image train --method reed --steps 2000 --out runs/image --time-budget 8m   # rerun to resume
    reed-image eval samples.npz                                         # FID_classifier, precision/recall, accuracy
"""

from __future__ import annotations

import argparse
import json
import sys

from reed_core.cli import add_threads_argument


def _classes(text: str | None, names: tuple[str, ...]) -> list[int] | None:
    """``--class`` values: ids or names, comma-separated; None = all classes in turn."""
    if text is None:
        return None
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if item.lstrip("-").isdigit():
            c = int(item)
        elif item in names:
            c = names.index(item)
        else:
            raise ValueError(f"unknown class {item!r}; the model knows ids 0..{len(names) - 1} ({', '.join(names)})")
        if not 0 <= c < len(names):
            raise ValueError(f"class id {c} out of range 0..{len(names) - 1}")
        out.append(c)
    if not out:
        raise ValueError("--class is empty")
    return out


def _classifier(args: argparse.Namespace):
    """The evaluation feature extractor: ``--classifier``, else the one shipped for the embedded set."""
    from .metrics import default_classifier, load_classifier

    if args.classifier is not None:
        return load_classifier(args.classifier)
    if args.data is not None:
        raise ValueError("--data other than the embedded set needs --classifier (scripts/train_classifier.py makes one)")
    return default_classifier()


def _interval(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--guidance-interval must be two numbers 'lo,hi', got {text!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"--guidance-interval needs 0 <= lo < hi <= 1, got {text!r}")
    return lo, hi


def _sample(args: argparse.Namespace) -> int:
    import torch

    from reed_core.cli import apply_threads, resolve_checkpoint
    from reed_core.io import output_path

    from .io import save_grid, save_npz
    from .loading import default_checkpoint, load_model
    from .sampler import hybrid_latents, sample

    if args.grid is None and args.npz is None:
        raise ValueError("give --grid PNG and/or --npz FILE")
    outputs = [output_path(p) for p in (args.grid, args.npz) if p is not None]
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.cfg < 1.0:
        raise ValueError(f"--cfg must be >= 1 (1 = no guidance), got {args.cfg}")
    interval = _interval(args.guidance_interval)
    apply_threads(args.threads)
    loaded = load_model(resolve_checkpoint(args.checkpoint, default_checkpoint), device=args.device, vae=args.vae)
    cfg = loaded.model.cfg
    classes = _classes(args.class_, loaded.class_names) or list(range(cfg.num_classes))
    labels = torch.tensor([classes[i % len(classes)] for i in range(args.num)], device=args.device)
    gen = torch.Generator(args.device).manual_seed(args.seed)
    if args.latents == "self" and not loaded.hybrid:
        raise ValueError("--latents self needs a variational-hybrid model (trained with --preset hybrid)")
    chunks = []
    from tqdm.auto import tqdm

    for lo in tqdm(range(0, args.num, args.batch_size), desc="sampling", disable=args.quiet):
        y = labels[lo:lo + args.batch_size]
        lat = hybrid_latents(loaded.model, loaded.hybrid, loaded.projectors, y, args.latents)
        x = sample(loaded.model, loaded.process, y, shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
                   num_steps=args.steps, method=args.method, cfg=args.cfg, guidance_interval=interval, generator=gen,
                   latents=lat)
        chunks.append(loaded.to_images(x).cpu())
    images = torch.cat(chunks)
    if args.grid is not None:
        save_grid(images, args.grid, nrow=args.nrow)
    if args.npz is not None:
        save_npz(images, labels, args.npz)
    if not args.quiet:
        print(f"wrote {', '.join(str(p) for p in outputs)} ({args.num} images of "
              f"{', '.join(loaded.class_names[c] for c in sorted(set(classes)))})", file=sys.stderr)
    return 0


def _train(args: argparse.Namespace) -> int:
    from reed_core.cli import check_grad_accum, check_weight_decay, parse_duration, report_training

    from .data import load_images
    from .presets import PRESETS, image_trainer, validation

    budget = parse_duration(args.time_budget) if args.time_budget else None
    check_grad_accum(args.grad_accum, args.batch_size)
    check_weight_decay(args.weight_decay)
    if args.eval_every < 0 or args.eval_samples < 10 or args.eval_steps < 1:
        raise ValueError(f"--eval-every must be >= 0, --eval-samples >= 10 and --eval-steps >= 1, got "
                         f"{args.eval_every}, {args.eval_samples}, {args.eval_steps}")
    classifier = _classifier(args) if args.eval_every else None
    train_set, held = load_images(args.data)
    run = {"method": args.method, "preset": args.preset, "vae": args.vae, "model": args.model, "data": train_set.source, "train_images": len(train_set),
           "steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
           "lr_decay": args.lr_decay, "lr_final": args.lr_final, "weight_decay": args.weight_decay, "path": args.path,
           "time_sampling": args.time_sampling, "time_budget_s": budget, "out": args.out,
           "eval_every": args.eval_every, "eval_samples": args.eval_samples, "eval_steps": args.eval_steps}
    if args.dry_run:
        print(json.dumps(run, indent=2))
        return 0
    trainer = image_trainer(args.method, train_set, args.out, model=args.model, steps=args.steps, preset=PRESETS[args.preset],
                            batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay, lr_final=args.lr_final,
                            seed=args.seed, path=args.path,
                            time_sampling=args.time_sampling, cache_dir=args.cache_dir, device=args.device,
                            precision=args.precision, vae=args.vae, grad_accum=args.grad_accum,
                            weight_decay=args.weight_decay)
    if args.eval_every:
        trainer.validation = validation(trainer, args.eval_every, held, samples=args.eval_samples,
                                        steps=args.eval_steps, seed=args.seed, classifier=classifier)
    trainer.fit(time_budget=budget)
    return report_training(trainer, args.method)


def _eval(args: argparse.Namespace) -> int:
    import torch

    from reed_core.io import atomic_write, output_path

    from .data import load_images, to_tensor
    from .io import read_images
    from .metrics import sample_metrics

    if args.json is not None:
        output_path(args.json)
    classifier = _classifier(args)
    _, held = load_images(args.data)
    real = to_tensor(held.images)
    images, labels = read_images(args.input, real.shape[-1], real.shape[1])
    if images.shape[1:] != real.shape[1:]:
        raise ValueError(f"{args.input}: images of shape {tuple(images.shape[1:])}, the reference set has "
                         f"{tuple(real.shape[1:])}")
    if labels is not None and (labels.min() < 0 or labels.max() >= classifier.num_classes):
        raise ValueError(f"{args.input}: labels outside 0..{classifier.num_classes - 1}")
    if len(images) < 10:
        raise ValueError(f"{args.input}: {len(images)} images are too few for FID / precision / recall (need >= 10)")
    with torch.no_grad():
        out = {"images": len(images), "reference": f"{held.source} eval split ({len(held)} images)",
               **sample_metrics(images, labels, real, classifier, k=args.k)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json is not None:
        atomic_write(args.json, text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from reed_core.cli import (
        METHOD_NAMES,
        HelpFormatter,
        add_grad_accum_argument,
        add_lr_schedule_arguments,
        add_precision_argument,
        add_weight_decay_argument,
    )

    from .model import SIT_PRESETS
    from .presets import PRESETS
    from .sampler import SAMPLER_METHODS

    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="reed-image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="class-conditional samples as a PNG grid and/or an .npz", formatter_class=fmt)
    s.add_argument("--class", dest="class_", default=None, help="class ids or names, comma-separated (default: all)")
    s.add_argument("--num", type=int, default=64, help="images to sample")
    s.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance scale (1 = none)")
    s.add_argument("--guidance-interval", default="0,1", help="t range 'lo,hi' where guidance applies (t = 1 is noise)")
    s.add_argument("--steps", type=int, default=50, help="sampler steps")
    s.add_argument("--method", choices=SAMPLER_METHODS, default="sde", help="SDE (Euler-Maruyama) or ODE sampler")
    s.add_argument("--grid", default=None, help="write a PNG grid here")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square)")
    s.add_argument("--npz", default=None, help="write the images (uint8) and labels here")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.add_argument("--batch-size", type=int, default=256, help="images sampled together")
    s.add_argument("--checkpoint", default=None, help="checkpoint or run directory (default: the shipped REED model)")
    s.add_argument("--device", default="cpu", help="cpu / cuda")
    add_threads_argument(s)
    s.add_argument("--latents", choices=("none", "self"), default="none",
                   help="a variational-hybrid model: sample unconditionally on z, or on its own projected z_hat")
    s.add_argument("--vae", default=None, help="a latent-space model's VAE directory (default: the one it was trained with)")
    s.add_argument("--quiet", action="store_true", help="no progress or summary output")
    s.set_defaults(func=_sample)

    t = sub.add_parser("train", help="train vanilla / REPA-style / REED SiT models", formatter_class=fmt)
    t.add_argument("--method", choices=METHOD_NAMES, default="reed", help="training method")
    t.add_argument("--model", choices=sorted(SIT_PRESETS), default="tiny", help="SiT preset")
    t.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="REED latents: the paper's two teachers, or the same as a variational hybrid")
    t.add_argument("--data", default=None, help="image set: mnist5k (embedded), an IDX directory, an .npz or an image folder")
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=64, help="images per step")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    add_lr_schedule_arguments(t)
    add_weight_decay_argument(t)
    t.add_argument("--path", choices=("linear", "cosine"), default="linear", help="interpolant path")
    t.add_argument("--time-sampling", choices=("uniform", "lognormal"), default="uniform", help="training times")
    t.add_argument("--seed", type=int, default=0, help="seed")
    t.add_argument("--out", default="runs/image", help="run directory; resumes if present")
    t.add_argument("--cache-dir", default=".cache/reed-image", help="cached teacher features")
    t.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    t.add_argument("--vae", default=None, help="train on the latents of this local diffusers AutoencoderKL directory (an SD-VAE)")
    add_precision_argument(t)
    add_grad_accum_argument(t)
    t.add_argument("--time-budget", default=None,
                   help="stop cleanly with a checkpoint before this much wall time (e.g. 8m, 1h30m); rerun to resume")
    t.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="every N steps score the EMA weights on samples against the held-out images (validation.jsonl: "
                        "FID_classifier, precision, recall, class accuracy) and keep the lowest-FID weights in OUT/best "
                        "(sample with --checkpoint OUT/best); 0: never")
    t.add_argument("--eval-samples", type=int, default=500, metavar="N",
                   help="class-balanced samples per evaluation (Euler ODE, the same noise every time)")
    t.add_argument("--eval-steps", type=int, default=25, metavar="N", help="sampler steps of the evaluation samples")
    t.add_argument("--classifier", default=None,
                   help="feature extractor of the evaluations (default: the shipped MNIST 5k one; needed for other --data)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="FID_classifier, precision/recall and class accuracy of images from any model",
                       formatter_class=fmt)
    e.add_argument("input", help="an .npz (images uint8 (N,H,W[,C]), optional labels) or a folder of images")
    e.add_argument("--data", default=None, help="reference image set (default: the embedded MNIST 5k eval split)")
    e.add_argument("--classifier", default=None, help="feature extractor weights (default: the shipped MNIST 5k one)")
    e.add_argument("--k", type=int, default=3, help="k of the k-NN precision / recall")
    e.add_argument("--json", default=None, help="also write the results here")
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    from reed_core.cli import run_cli

    return run_cli("reed-image", build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
