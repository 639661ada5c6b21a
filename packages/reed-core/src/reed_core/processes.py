"""Continuous corruption processes shared across domains (t = 0 clean, t = 1 pure noise)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .types import Corruption

Prediction = Literal["velocity", "x0", "noise"]
_PREDICTIONS = ("velocity", "x0", "noise")


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


@dataclass(frozen=True)
class LinearInterpolant:
    """SiT / rectified-flow interpolant x_t = (1 - t) x0 + t * noise.

    ``prediction`` picks the regression target: "velocity" (d x_t / dt = noise - x0, SiT's default), "x0" or
    "noise". ``t_min``/``t_max`` clip the training times. The per-sample loss is the mean squared error over
    all non-batch dims (optionally restricted by ``extras['mask']`` broadcastable to x0).
    """

    prediction: Prediction = "velocity"
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        if self.prediction not in _PREDICTIONS:
            raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {self.prediction!r}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")

    def sample_time(
        self, batch_size: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        u = torch.rand(batch_size, device=device, generator=generator)
        return self.t_min + (self.t_max - self.t_min) * u

    def corrupt(
        self, x0: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> Corruption:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        tb = _bcast(t, x0)
        x_t = (1 - tb) * x0 + tb * noise
        target = {"velocity": noise - x0, "x0": x0, "noise": noise}[self.prediction]
        return Corruption(x_t=x_t, t=t, target=target, extras={"noise": noise})

    def loss(self, prediction: torch.Tensor, corruption: Corruption) -> torch.Tensor:
        err = (prediction.float() - corruption.target.float()) ** 2
        mask = corruption.extras.get("mask")
        if mask is None:
            return err.flatten(1).mean(dim=1)
        m = mask.to(err.dtype).expand_as(err)
        return (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)

    def velocity(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a model prediction at (x_t, t) into the ODE velocity d x_t / dt."""
        tb = _bcast(t, x_t)
        if self.prediction == "velocity":
            return prediction
        if self.prediction == "x0":
            return (x_t - prediction) / tb.clamp_min(1e-4)
        return (prediction - x_t) / (1 - tb).clamp_min(1e-4)


def euler_sample(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int = 50,
    t_end: float = 0.0,
) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = 1 (``noise``) down to ``t_end`` with ``num_steps`` Euler
    steps. ``velocity_fn`` receives t as a (B,) tensor."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    x = noise
    times = torch.linspace(1.0, t_end, num_steps + 1, device=noise.device, dtype=torch.float32)
    for i in range(num_steps):
        t = times[i].expand(x.shape[0])
        x = x + (times[i + 1] - times[i]).to(x.dtype) * velocity_fn(x, t)
    return x
