"""SiT's stochastic interpolants: x_t = alpha_t x0 + sigma_t eps, t = 0 data, t = 1 noise, velocity prediction.

* ``path="linear"``: alpha_t = 1 - t, sigma_t = t (rectified flow; SiT's default);
* ``path="cosine"``: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2) (SiT's GVP, variance preserving).

The regression target is the velocity d x_t / dt = alpha'_t x0 + sigma'_t eps; the per-sample loss is its mean
squared error. Training times are uniform on [t_min, t_max] or log-normal (t = sigmoid(N(mean, std)), as in
SD3 / EDM-style samplers). The process never calls the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from reed_core import Corruption

__all__ = ["Interpolant"]

Path = Literal["linear", "cosine"]
TimeSampling = Literal["uniform", "lognormal"]


def _b(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


@dataclass(frozen=True)
class Interpolant:
    path: Path = "linear"
    time_sampling: TimeSampling = "uniform"
    t_min: float = 0.0
    t_max: float = 1.0
    lognormal_mean: float = 0.0
    lognormal_std: float = 1.0

    def __post_init__(self) -> None:
        if self.path not in ("linear", "cosine"):
            raise ValueError(f"path must be 'linear' or 'cosine', got {self.path!r}")
        if self.time_sampling not in ("uniform", "lognormal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'lognormal', got {self.time_sampling!r}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.lognormal_std <= 0:
            raise ValueError(f"lognormal_std must be > 0, got {self.lognormal_std}")

    # ------------------------------------------------------------------------------------------ the path
    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t, d alpha/dt, d sigma/dt), each shaped like ``t``."""
        if self.path == "linear":
            return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
        h = 0.5 * math.pi
        return torch.cos(h * t), torch.sin(h * t), -h * torch.sin(h * t), h * torch.cos(h * t)

    def sample_time(self, batch_size: int, *, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
        if self.time_sampling == "uniform":
            u = torch.rand(batch_size, device=device, generator=generator)
        else:
            n = torch.randn(batch_size, device=device, generator=generator)
            u = torch.sigmoid(self.lognormal_mean + self.lognormal_std * n)
        return self.t_min + (self.t_max - self.t_min) * u

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None = None) -> Corruption:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        a, s, da, ds = (_b(c, x0) for c in self.coefficients(t))
        return Corruption(x_t=a * x0 + s * noise, t=t, target=da * x0 + ds * noise, extras={"noise": noise})

    def loss(self, prediction: torch.Tensor, corruption: Corruption) -> torch.Tensor:
        return ((prediction.float() - corruption.target.float()) ** 2).flatten(1).mean(1)

    # ------------------------------------------------------------------------------ for the samplers
    def x0_and_noise(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve x_t = a x0 + s eps, v = a' x0 + s' eps for (x0, eps) (the determinant a s' - s a' is 1 for the
        linear path and pi/2 for the cosine one, never 0)."""
        a, s, da, ds = (_b(c, x_t) for c in self.coefficients(t))
        det = a * ds - s * da
        return (ds * x_t - s * v) / det, (a * v - da * x_t) / det

    def score(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad log p_t(x_t) = -eps / sigma_t from a velocity prediction (t > 0)."""
        _, eps = self.x0_and_noise(v, x_t, t)
        return -eps / _b(self.coefficients(t)[1], x_t).clamp_min(1e-4)
