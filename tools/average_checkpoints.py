"""Average the EMA weights of checkpoints of one model (a "model soup", as timm's ``avg_checkpoints.py``):
``uv run --locked python tools/average_checkpoints.py RUN_A/best RUN_B/best --out soup``.

Each argument is a checkpoint directory (``ema.safetensors`` + ``config.json``, e.g. a run's ``best`` or the shipped
weights). Floating-point tensors are averaged in float64 and stored in their own dtype; other tensors must be
equal. The output holds ``ema.safetensors`` and the first checkpoint's ``config.json`` (without its ``best``
record) with ``averaged_from`` naming the inputs; it can be evaluated, designed with and fine-tuned from like any
checkpoint. Every domain's checkpoints work; all inputs must be of the same model (same tensor names and shapes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def average(paths: list[Path]) -> dict:
    import torch
    from safetensors.torch import load_file

    states = []
    for p in paths:
        if not (p / "ema.safetensors").is_file() or not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: not a checkpoint directory (needs ema.safetensors and config.json)")
        states.append(load_file(str(p / "ema.safetensors")))
    first = states[0]
    for p, s in zip(paths[1:], states[1:], strict=True):
        if s.keys() != first.keys():
            raise ValueError(f"{p}: tensor names differ from {paths[0]}'s "
                             f"(only here: {sorted(s.keys() - first.keys())[:3]}, only there: "
                             f"{sorted(first.keys() - s.keys())[:3]})")
        for k, v in s.items():
            if v.shape != first[k].shape or v.dtype != first[k].dtype:
                raise ValueError(f"{p}: {k} is {v.dtype} {tuple(v.shape)}, {paths[0]} has "
                                 f"{first[k].dtype} {tuple(first[k].shape)}")
            if not v.is_floating_point() and not torch.equal(v, first[k]):
                raise ValueError(f"{p}: non-float tensor {k} differs from {paths[0]}'s")
    return {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in first.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint directories (two or more)")
    p.add_argument("--out", required=True, type=Path, help="new checkpoint directory (must not exist)")
    args = p.parse_args(argv)
    try:
        if len(args.checkpoints) < 2:
            raise ValueError("give two or more checkpoint directories")
        if args.out.exists():
            raise FileExistsError(f"{args.out}: already exists (give a new directory)")
        state = average(args.checkpoints)
        config = json.loads((args.checkpoints[0] / "config.json").read_text())
    except (OSError, ValueError, json.JSONDecodeError) as err:
        print(f"average_checkpoints: error: {err}", file=sys.stderr)
        return 2
    from reed_core.checkpoint import atomic_directory, save_weights

    config.pop("best", None)
    config["averaged_from"] = [str(c) for c in args.checkpoints]
    with atomic_directory(args.out) as tmp:  # the directory appears whole or not at all
        save_weights(tmp / "ema.safetensors", state)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"averaged {len(args.checkpoints)} checkpoints ({len(state)} tensors) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
