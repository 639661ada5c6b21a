"""Curriculum schedules over optimizer steps and per-sample time weights w(t).

Step schedules are small frozen dataclasses with ``__call__(step) -> float``. Units are optimizer steps;
epoch-minded domains convert once (``steps = epochs * steps_per_epoch``). Every schedule is continuous at
its joins unless a join is explicitly a jump (``Piecewise`` of unrelated pieces, ``Delayed``).

Time weights are functions of the noise level with **t = 0 clean, t = 1 pure noise**, applied per sample:
``w(t)`` maps a (B,) tensor to a (B,) tensor. ``cumulative(t)`` is REED's A_t = sum_{s >= t} alpha_s with the
time weight read as the (unnormalised) density alpha of the step at which z enters the reverse chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------------------------------
# Step schedules


class Schedule:
    """Base class: a function of the optimizer step."""

    def __call__(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    value: float = 1.0

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class _Ramp(Schedule):
    """``start_value`` until ``start_step``, a ramp to ``end_value`` at ``end_step``, held afterwards."""

    start_value: float
    end_value: float
    start_step: int
    end_step: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(f"need 0 <= start_step < end_step, got {self.start_step}, {self.end_step}")

    def progress(self, step: int) -> float:
        return min(max((step - self.start_step) / (self.end_step - self.start_step), 0.0), 1.0)


class Linear(_Ramp):
    """Linear ramp (see ``_Ramp``)."""

    def __call__(self, step: int) -> float:
        return float(self.start_value + (self.end_value - self.start_value) * self.progress(step))


class Cosine(_Ramp):
    """Half-cosine ramp (see ``_Ramp``). The progress is ``(step - start_step) / (end_step - start_step)`` with
    explicit parentheses: the REED reference code's decay lacks them and jumps at the join (tested here)."""

    def __call__(self, step: int) -> float:
        p = self.progress(step)
        return float(self.end_value + (self.start_value - self.end_value) * 0.5 * (1.0 + math.cos(math.pi * p)))


@dataclass(frozen=True)
class WarmUp(Schedule):
    """0 until ``delay`` (an optional alignment-only start), linear ramp to ``value`` over ``steps``."""

    steps: int
    delay: int = 0
    value: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.delay < 0:
            raise ValueError(f"warm-up steps and delay must be >= 0, got steps={self.steps}, delay={self.delay}")

    def __call__(self, step: int) -> float:
        ramp = min((step - self.delay) / self.steps, 1.0) if self.steps else 1.0
        return 0.0 if step < self.delay else float(self.value * ramp)


@dataclass(frozen=True)
class Delayed(Schedule):
    """0 before ``delay``; afterwards ``schedule(step - delay)``."""

    schedule: Schedule
    delay: int

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")

    def __call__(self, step: int) -> float:
        return 0.0 if step < self.delay else self.schedule(step - self.delay)


@dataclass(frozen=True)
class Piecewise(Schedule):
    """``pieces[i]`` (called with the global step) on ``[boundaries[i-1], boundaries[i])``."""

    boundaries: tuple[int, ...]
    pieces: tuple[Schedule, ...]

    def __post_init__(self) -> None:
        if len(self.pieces) != len(self.boundaries) + 1:
            raise ValueError(f"Piecewise needs len(pieces) == len(boundaries) + 1, got {len(self.pieces)}, {len(self.boundaries)}")
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError(f"Piecewise boundaries must increase strictly, got {self.boundaries}")

    def __call__(self, step: int) -> float:
        return self.pieces[sum(1 for b in self.boundaries if step >= b)](step)


# --------------------------------------------------------------------------------------------------------------
# Time weights w(t), t = 0 clean, t = 1 noise


class TimeWeight:
    """Base class: a per-sample weight of the noise level. ``cumulative`` gives A_t (see module doc)."""

    _GRID = 4097

    def __call__(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def cumulative(self, t: torch.Tensor) -> torch.Tensor:
        """A_t = int_t^1 w(s) ds / int_0^1 w(s) ds, by the trapezoid rule on a fine grid. Shape of ``t``."""
        grid = torch.linspace(0.0, 1.0, self._GRID, dtype=torch.float64)
        w = self(grid).to(torch.float64).clamp_min(0.0)
        seg = 0.5 * (w[1:] + w[:-1]) / (self._GRID - 1)  # mass of each interval
        tail = torch.cat([seg.flip(0).cumsum(0).flip(0), seg.new_zeros(1)])  # mass of [grid_i, 1]
        if tail[0] <= 0:
            raise ValueError(f"{type(self).__name__} has no mass on [0, 1]; cannot form A_t")
        pos = t.detach().to(torch.float64).clamp(0.0, 1.0) * (self._GRID - 1)
        lo = pos.floor().long().clamp(max=self._GRID - 2)
        out = torch.lerp(tail[lo], tail[lo + 1], pos - lo) / tail[0]
        return out.to(t.dtype if t.is_floating_point() else torch.float32).to(t.device)


@dataclass(frozen=True)
class ConstantTime(TimeWeight):
    value: float = 1.0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, self.value, dtype=t.dtype if t.is_floating_point() else torch.float32)


@dataclass(frozen=True)
class LinearTime(TimeWeight):
    """w(t) = at_clean + (at_noise - at_clean) t."""

    at_clean: float = 1.0
    at_noise: float = 0.0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.at_clean + (self.at_noise - self.at_clean) * t


@dataclass(frozen=True)
class CosineTime(TimeWeight):
    """Half-cosine from ``at_clean`` (t=0) to ``at_noise`` (t=1)."""

    at_clean: float = 1.0
    at_noise: float = 0.0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.at_noise + (self.at_clean - self.at_noise) * 0.5 * (1.0 + torch.cos(math.pi * t))


@dataclass(frozen=True)
class CutoffTime(TimeWeight):
    """``value`` for t in [t_min, t_max], 0 outside (e.g. align only at low noise)."""

    t_min: float = 0.0
    t_max: float = 1.0
    value: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return ((t >= self.t_min) & (t <= self.t_max)).to(t.dtype) * self.value


@dataclass(frozen=True)
class SigmoidTime(TimeWeight):
    """Smooth step at ``center``: decreasing (weight on clean side) by default."""

    center: float = 0.5
    sharpness: float = 10.0
    decreasing: bool = True

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((-1.0 if self.decreasing else 1.0) * self.sharpness * (t - self.center))


@dataclass(frozen=True)
class TerminalTime(TimeWeight):
    """All weight at t = 1 (RCG's choice: the representation enters at the very start of sampling)."""

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return (t >= 1.0).to(t.dtype)

    def cumulative(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t, dtype=t.dtype if t.is_floating_point() else torch.float32)
