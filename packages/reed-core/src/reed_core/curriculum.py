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
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

# --------------------------------------------------------------------------------------------------------------
# Step schedules


class Schedule:
    """Base class: a function of the optimizer step."""

    def __call__(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError


def _check_interval(start_step: int, end_step: int) -> None:
    if start_step < 0 or end_step <= start_step:
        raise ValueError(f"need 0 <= start_step < end_step, got start_step={start_step}, end_step={end_step}")


@dataclass(frozen=True)
class Constant(Schedule):
    value: float = 1.0

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Linear(Schedule):
    """``start_value`` until ``start_step``, linear to ``end_value`` at ``end_step``, held afterwards."""

    start_value: float
    end_value: float
    start_step: int
    end_step: int

    def __post_init__(self) -> None:
        _check_interval(self.start_step, self.end_step)

    def __call__(self, step: int) -> float:
        p = min(max((step - self.start_step) / (self.end_step - self.start_step), 0.0), 1.0)
        return float(self.start_value + (self.end_value - self.start_value) * p)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Half-cosine from ``start_value`` (at ``start_step``) to ``end_value`` (at ``end_step``), held outside.

    The progress is computed as ``(step - start_step) / (end_step - start_step)`` with explicit parentheses:
    the REED reference code's decay lacks them and jumps at the join; a test checks continuity here.
    """

    start_value: float
    end_value: float
    start_step: int
    end_step: int

    def __post_init__(self) -> None:
        _check_interval(self.start_step, self.end_step)

    def __call__(self, step: int) -> float:
        p = min(max((step - self.start_step) / (self.end_step - self.start_step), 0.0), 1.0)
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
        if step < self.delay:
            return 0.0
        if self.steps == 0:
            return float(self.value)
        return float(self.value * min((step - self.delay) / self.steps, 1.0))


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
            raise ValueError(
                f"Piecewise needs len(pieces) == len(boundaries) + 1, got {len(self.pieces)} and {len(self.boundaries)}"
            )
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError(f"Piecewise boundaries must increase strictly, got {self.boundaries}")

    def __call__(self, step: int) -> float:
        index = sum(1 for b in self.boundaries if step >= b)
        return self.pieces[index](step)


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
        total = tail[0]
        if total <= 0:
            raise ValueError(f"{type(self).__name__} has no mass on [0, 1]; cannot form A_t")
        a = tail / total
        pos = t.detach().to(torch.float64).clamp(0.0, 1.0) * (self._GRID - 1)
        lo = pos.floor().long().clamp(max=self._GRID - 2)
        frac = pos - lo
        out = a[lo] * (1 - frac) + a[lo + 1] * frac
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
        inside = (t >= self.t_min) & (t <= self.t_max)
        return inside.to(t.dtype) * self.value


@dataclass(frozen=True)
class SigmoidTime(TimeWeight):
    """Smooth step at ``center``: decreasing (weight on clean side) by default."""

    center: float = 0.5
    sharpness: float = 10.0
    decreasing: bool = True

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        sign = 1.0 if self.decreasing else -1.0
        return torch.sigmoid(-sign * self.sharpness * (t - self.center))


@dataclass(frozen=True)
class TerminalTime(TimeWeight):
    """All weight at t = 1 (RCG's choice: the representation enters at the very start of sampling)."""

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return (t >= 1.0).to(t.dtype)

    def cumulative(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t, dtype=t.dtype if t.is_floating_point() else torch.float32)


# --------------------------------------------------------------------------------------------------------------
# The paper's configurations as presets


@dataclass(frozen=True)
class CurriculumPreset:
    """A REED configuration: the generative-loss schedule mu(s), the shared alignment schedule lambda(s),
    per-latent coefficients c_l (projection coefficient folded in) and where each latent is aligned
    (``depths``: name -> (layer index, number of layers), 1-based as in the paper)."""

    denoise: Schedule
    align: Schedule
    coefficients: Mapping[str, float]
    depths: Mapping[str, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))


def _image(total_steps: int) -> CurriculumPreset:
    # SiT-XL/2: proj 0.5; DINOv2 (1.0) at depth 8/28, VLM caption embedding (0.5) at 16/28;
    # diffusion warm-up over 50k of 1M steps (5 %), alignment constant.
    warm = max(1, round(0.05 * total_steps))
    return CurriculumPreset(
        denoise=WarmUp(warm),
        align=Constant(1.0),
        coefficients=MappingProxyType({"dinov2": 0.5 * 1.0, "caption": 0.5 * 0.5}),
        depths=MappingProxyType({"dinov2": (8, 28), "caption": (16, 28)}),
    )


def _protein(total_steps: int) -> CurriculumPreset:
    # 0.2 x (0.5 single, 2.0 pair, 1.0 structure); diffusion warm-up over 50 of 200 epochs (25 %),
    # alignment held during warm-up then cosine-decayed to 0 at the end of training.
    warm = max(1, round(0.25 * total_steps))
    end = max(warm + 1, total_steps)
    return CurriculumPreset(
        denoise=WarmUp(warm),
        align=Piecewise((warm,), (Constant(1.0), Cosine(1.0, 0.0, warm, end))),
        coefficients=MappingProxyType({"single": 0.2 * 0.5, "pair": 0.2 * 2.0, "structure": 0.2 * 1.0}),
    )


def _molecule(total_steps: int) -> CurriculumPreset:
    # 0.2, pooled after layer 5 of 12; generative loss ramped 0 -> 1 over 30 of 200 epochs (15 %).
    warm = max(1, round(0.15 * total_steps))
    return CurriculumPreset(
        denoise=WarmUp(warm),
        align=Constant(1.0),
        coefficients=MappingProxyType({"graph2d": 0.2}),
        depths=MappingProxyType({"graph2d": (5, 12)}),
    )


CURRICULUM_PRESETS = {"image": _image, "protein": _protein, "molecule": _molecule}


def reed_curriculum(domain: str, total_steps: int) -> CurriculumPreset:
    """The paper's curriculum for ``domain`` ("image", "protein", "molecule") scaled to ``total_steps``."""
    if domain not in CURRICULUM_PRESETS:
        raise ValueError(f"domain must be one of {sorted(CURRICULUM_PRESETS)}, got {domain!r}")
    if total_steps < 2:
        raise ValueError(f"total_steps must be >= 2, got {total_steps}")
    return CURRICULUM_PRESETS[domain](total_steps)
