"""Stochastic interpolants shared across domains: x_t = alpha_t x0 + sigma_t eps, t = 0 data, t = 1 noise.

* ``path="linear"``: alpha_t = 1 - t, sigma_t = t (rectified flow; SiT's default);
* ``path="cosine"``: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2) (SiT's GVP, variance preserving).

``prediction`` picks the regression target: "velocity" d x_t / dt = alpha'_t x0 + sigma'_t eps (SiT), "x0" or
"noise"; the per-sample loss is its mean squared error (over ``extras['mask']`` when a domain sets one).
Training times are uniform on [t_min, t_max] or log-normal (t = sigmoid(N(mean, std)), as in SD3). The process
never calls the model; ``x0_and_noise`` / ``velocity`` / ``score`` convert a prediction for the samplers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .types import Corruption

_CHOICES = {"prediction": ("velocity", "x0", "noise"), "path": ("linear", "cosine"),
            "time_sampling": ("uniform", "lognormal")}


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


@dataclass(frozen=True)
class Interpolant:
    prediction: Literal["velocity", "x0", "noise"] = "velocity"
    path: Literal["linear", "cosine"] = "linear"
    time_sampling: Literal["uniform", "lognormal"] = "uniform"
    t_min: float = 0.0
    t_max: float = 1.0
    lognormal_mean: float = 0.0
    lognormal_std: float = 1.0

    def __post_init__(self) -> None:
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.lognormal_std <= 0:
            raise ValueError(f"lognormal_std must be > 0, got {self.lognormal_std}")

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
        a, s, da, ds = (_bcast(c, x0) for c in self.coefficients(t))
        target = {"velocity": da * x0 + ds * noise, "x0": x0, "noise": noise}[self.prediction]
        return Corruption(x_t=a * x0 + s * noise, t=t, target=target, extras={"noise": noise})

    def loss(self, prediction: torch.Tensor, corruption: Corruption) -> torch.Tensor:
        err = (prediction.float() - corruption.target.float()) ** 2
        if (mask := corruption.extras.get("mask")) is None:
            return err.flatten(1).mean(dim=1)
        m = mask.to(err.dtype).expand_as(err)
        return (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)

    def x0_and_noise(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by a model ``prediction`` at (x_t, t). For a velocity this solves x_t = a x0 + s eps,
        v = a' x0 + s' eps (the determinant a s' - s a' is 1 on the linear path, pi/2 on the cosine one)."""
        a, s, da, ds = (_bcast(c, x_t) for c in self.coefficients(t))
        if self.prediction == "x0":
            return prediction, (x_t - a * prediction) / s.clamp_min(1e-4)
        if self.prediction == "noise":
            return (x_t - s * prediction) / a.clamp_min(1e-4), prediction
        det = a * ds - s * da
        return (ds * x_t - s * prediction) / det, (a * prediction - da * x_t) / det

    def velocity(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The ODE velocity d x_t / dt from a model prediction at (x_t, t)."""
        if self.prediction == "velocity":
            return prediction
        x0, eps = self.x0_and_noise(prediction, x_t, t)
        _, _, da, ds = (_bcast(c, x_t) for c in self.coefficients(t))
        return da * x0 + ds * eps

    def score(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad log p_t(x_t) = -eps / sigma_t from a model prediction (t > 0)."""
        _, eps = self.x0_and_noise(prediction, x_t, t)
        return -eps / _bcast(self.coefficients(t)[1], x_t).clamp_min(1e-4)


LinearInterpolant = Interpolant  # the rectified-flow default (path="linear"), under its historical name


def euler_sample(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 num_steps: int = 50, t_end: float = 0.0) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = 1 (``noise``) down to ``t_end`` with ``num_steps`` Euler
    steps. ``velocity_fn`` receives t as a (B,) tensor."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    x, times = noise, torch.linspace(1.0, t_end, num_steps + 1, device=noise.device, dtype=torch.float32)
    for i in range(num_steps):
        x = x + (times[i + 1] - times[i]).to(x.dtype) * velocity_fn(x, times[i].expand(x.shape[0]))
    return x
