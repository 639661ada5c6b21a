"""Step-time overhead of REED over vanilla training, with cached teacher features.

A SiT-B/2-like transformer (width 768, 12 blocks, 256 tokens) is trained by the reed-core Trainer with the
linear interpolant; REED adds two latents with cached features (token features at block 4 through a REPA
projector with hidden 2048, a pooled caption-like vector at block 8). Times are medians of whole optimizer
steps (forward, backward, AdamW, EMA). Run: ``uv run benchmarks/core_overhead.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from reed_core import (
    AlignmentSpec,
    Batch,
    DenoiserOutput,
    LinearInterpolant,
    ProjectorBank,
    REEDObjective,
    Representation,
    TrainConfig,
    Trainer,
)
from reed_core.cli import HelpFormatter


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, in_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.t_embed = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.out = nn.Linear(width, in_dim)

    def forward(self, x_t, t, cond=None, *, capture=()) -> DenoiserOutput:
        h = self.inp(x_t) + self.t_embed(t[:, None])[:, None]
        hiddens = {}
        for i, block in enumerate(self.blocks):
            h = block(h)
            if f"block{i + 1}" in capture:
                hiddens[f"block{i + 1}"] = h
        return DenoiserOutput(self.out(h), hiddens)


def measure(method: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.tokens, args.in_dim, generator=g)
    reps = {"ssl": Representation(torch.randn(args.batch, args.tokens, 768, generator=g), None, "token"),
            "caption": Representation(torch.randn(args.batch, 384, generator=g), None, "pooled")}
    batch = Batch(x0=x, representations=reps if method == "reed" else {})
    model = Transformer(args.width, args.depth, args.heads, args.in_dim)
    specs, bank = (), None
    if method == "reed":
        specs = (AlignmentSpec("ssl", "block4", "token", coefficient=0.5),
                 AlignmentSpec("caption", "block8", "pooled", coefficient=0.25))
        bank = ProjectorBank({"ssl": (args.width, 768), "caption": (args.width, 384)}, hidden_dim=2048)
    objective = REEDObjective(LinearInterpolant(), specs, bank)
    cfg = TrainConfig(max_steps=10**9, lr=1e-4, progress=False)
    trainer = Trainer(model, objective, lambda step, shard, n: batch, cfg, device=args.device)
    times = []
    for i in range(args.warmup + args.steps):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--width", type=int, default=768, help="transformer width")
    p.add_argument("--depth", type=int, default=12, help="transformer blocks")
    p.add_argument("--heads", type=int, default=12, help="attention heads")
    p.add_argument("--tokens", type=int, default=256, help="tokens per sample (SiT-B/2 at 256 px: 256)")
    p.add_argument("--in-dim", type=int, default=16, help="input channels per token")
    p.add_argument("--batch", type=int, default=4, help="batch size")
    p.add_argument("--steps", type=int, default=5, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    p.add_argument("--json", default=None, help="write results here")
    args = p.parse_args(argv)
    vanilla = measure("vanilla", args)
    reed = measure("reed", args)
    result = {"device": args.device, "vanilla_s_per_step": vanilla, "reed_s_per_step": reed, "ratio": reed / vanilla,
              "config": {k: v for k, v in vars(args).items() if k != "json"}}
    print(f"device {args.device}  width {args.width} depth {args.depth} tokens {args.tokens} batch {args.batch}")
    print(f"vanilla {vanilla * 1e3:8.1f} ms/step   {1 / vanilla:6.2f} steps/s")
    print(f"REED    {reed * 1e3:8.1f} ms/step   {1 / reed:6.2f} steps/s")
    print(f"REED/vanilla step-time ratio: {reed / vanilla:.3f} (target <= 1.10)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
