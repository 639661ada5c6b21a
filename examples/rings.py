"""A toy REED domain, built only on reed-core's protocols: ``uv run python examples/rings.py``.

The worked example of docs/ADDING_A_DOMAIN.md. Data: rings of 16 points in 2-D (random centre, radius, phase),
tokens (B,16,2). Denoiser: a small transformer trained as a SiT-style velocity model on the linear interpolant.
Teacher: a pooled representation of the clean ring (a fixed random projection of its centre, radius and phase),
the global structure the denoiser must discover. Vanilla and REED train with identical seeds, data and steps;
the script prints both loss curves and a sample-quality score (ring error of Euler samples).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from torch import nn

from reed_core import (
    Curriculum,
    DenoiserOutput,
    DomainPreset,
    LatentSpec,
    LinearInterpolant,
    TrainConfig,
    build_trainer,
    euler_sample,
)
from reed_core.testing import RandomProjectionTeacher

POINTS = 16


def make_rings(n: int, seed: int) -> torch.Tensor:
    """(n, 16, 2) rings: centre ~ N(0, 0.5^2), radius ~ U(0.5, 1.5), phase ~ U(0, 2 pi)."""
    g = torch.Generator().manual_seed(seed)
    centre = 0.5 * torch.randn(n, 1, 2, generator=g)
    radius = 0.5 + torch.rand(n, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    ang = phase + 2 * math.pi * torch.arange(POINTS)[None, :] / POINTS
    return centre + radius * torch.stack([ang.cos(), ang.sin()], dim=-1)


def ring_params(x0: torch.Tensor) -> torch.Tensor:
    """Global structure of clean rings: centre (2), radius (1), cos/sin of phase (2) -> (B,5)."""
    centre = x0.mean(dim=1)
    rel = x0 - centre[:, None]
    radius = rel.norm(dim=-1).mean(dim=1, keepdim=True)
    return torch.cat([centre, radius, rel[:, 0] / radius], dim=-1)


def ring_error(x: torch.Tensor) -> float:
    """Mean relative spread of distances to the centroid (0 for perfect rings)."""
    d = (x - x.mean(dim=1, keepdim=True)).norm(dim=-1)
    return float((d.std(dim=1) / d.mean(dim=1).clamp_min(1e-6)).mean())


# 1. The denoiser: forward(x_t, t, cond, *, capture) -> DenoiserOutput, hiddens only for the captured names.
class RingDenoiser(nn.Module):
    """A pre-norm transformer over the points with a sinusoidal time embedding; captures ``block{i}``."""

    def __init__(self, width: int = 64, depth: int = 3, heads: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(2, width)
        self.time = nn.Sequential(nn.Linear(32, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2))

    def forward(self, x_t, t, cond=None, *, capture=()) -> DenoiserOutput:
        freqs = torch.exp(torch.linspace(0, math.log(1000), 16, device=t.device))
        h = self.inp(x_t) + self.time(torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], -1))[:, None]
        hiddens = {}
        for i, block in enumerate(self.blocks):
            h = block(h)  # (B,L,W)
            if f"block{i}" in capture:
                hiddens[f"block{i}"] = h
        return DenoiserOutput(self.out(h), hiddens)


# 2. The training data: items, collate, and what a cached teacher needs (rings are never cropped).
class RingData:
    weights = None  # uniform sampling

    def __init__(self, n: int = 4096, seed: int = 1) -> None:
        self.rings = make_rings(n, seed)

    def __len__(self) -> int:
        return len(self.rings)

    @property
    def lengths(self) -> np.ndarray:
        return np.full(len(self.rings), POINTS)

    def collate(self, items: np.ndarray) -> torch.Tensor:
        return self.rings[torch.as_tensor(items)]

    whole = collate

    def window(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(x0), dtype=torch.long), torch.ones(x0.shape[:2], dtype=torch.bool)


# 3. The domain: builds denoiser and process, resolves where latents are captured, describes the model.
class RingDomain:
    name = "rings"

    def __init__(self, data: RingData, width: int = 64, depth: int = 3) -> None:
        self.data, self.width, self.depth = data, width, depth

    def build_model(self, latent_dims) -> RingDenoiser:
        if latent_dims:
            raise ValueError("the ring denoiser takes no hybrid latents")
        return RingDenoiser(self.width, self.depth)

    def build_process(self) -> LinearInterpolant:
        return LinearInterpolant("velocity")

    def capture(self, layer: str | float) -> tuple[str, int]:
        name = layer if isinstance(layer, str) else f"block{max(1, round(layer * self.depth)) - 1}"
        return name, self.width

    def model_config(self) -> dict:
        return {"width": self.width, "depth": self.depth}


# 4. The preset: one LatentSpec per teacher, the curriculum, what REPA-style uses.
def ring_teacher(domain: RingDomain) -> RandomProjectionTeacher:
    return RandomProjectionTeacher("rings", in_dim=5, dim=32, granularity="pooled", view=lambda b: (ring_params(b.x0), None))


PRESET = DomainPreset(latents=(LatentSpec("rings", ring_teacher, layer=2 / 3),), curriculum=Curriculum(warmup=0.1),
                      repa_latents=("rings",), align_coefficient=0.5, projector_hidden=128)


# 5. A sampler: a plain function with an explicit generator.
@torch.no_grad()
def sample_rings(model: nn.Module, process: LinearInterpolant, n: int, *, num_steps: int = 50,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(n, POINTS, 2, generator=generator)
    return euler_sample(lambda x, t: process.velocity(model(x, t).prediction, x, t), noise, num_steps=num_steps)


def run(method: str, steps: int, batch_size: int, seed: int) -> tuple[list[float], float, float]:
    domain = RingDomain(RingData())
    train = TrainConfig(max_steps=steps, lr=1e-3, ema_decay=0.99, seed=seed, progress=False, log_every=25)
    trainer = build_trainer(domain, PRESET, method, train, batch_size, device="cpu", progress=False)
    start = time.perf_counter()
    history = trainer.fit(resume=False)
    elapsed = time.perf_counter() - start
    model = trainer.model.eval()
    x = sample_rings(model, trainer.objective.process, 512, generator=torch.Generator().manual_seed(123))
    return [h["denoise"] for h in history], ring_error(x), steps / elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per method")
    parser.add_argument("--batch-size", type=int, default=64, help="rings per batch")
    parser.add_argument("--seed", type=int, default=0, help="seed shared by both methods")
    args = parser.parse_args(argv)
    results = {m: run(m, args.steps, args.batch_size, args.seed) for m in ("vanilla", "reed")}
    every = max(1, args.steps // 8)
    print(f"denoising loss (mean over {every}-step windows), {args.steps} steps, batch {args.batch_size}")
    print(f"{'steps':>8} " + " ".join(f"{m:>9}" for m in results))
    for lo in range(0, args.steps, every):
        row = [float(np.mean(r[0][lo:lo + every])) for r in results.values()]
        print(f"{lo + every:>8} " + " ".join(f"{v:9.4f}" for v in row))
    print(f"{'ring err':>8} " + " ".join(f"{r[1]:9.4f}" for r in results.values()) + "   (0 = perfect rings)")
    print(f"{'steps/s':>8} " + " ".join(f"{r[2]:9.1f}" for r in results.values()))
    return results


if __name__ == "__main__":
    main()
