"""Declarative assembly: a domain's preset + a method name -> a ready ``Trainer``.

A ``DomainPreset`` lists the domain's latents (one ``LatentSpec`` each: adding a teacher is adding one record),
the REED curriculum and which latents the REPA-style baseline uses. ``METHODS`` says how each method uses them:

* ``vanilla``: the process loss alone;
* ``repa``: the preset's ``repa_latents`` with coefficient ``align_coefficient``, no curriculum;
* ``reed``: every latent with coefficient ``align_coefficient * c_l``, the curriculum's alignment schedule and
  the generative-loss warm-up (the paper: projection coefficient x per-teacher coefficient).

A latent marked ``always`` (a distilled prediction) joins every method, at its own constant coefficient.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .cache import cache_features
from .curriculum import Constant, ConstantTime, Cosine, Linear, Schedule, TimeWeight, WarmUp
from .data import StepData, StepSampler
from .objective import PREDICTION, AlignmentSpec, REEDObjective
from .projector import ProjectorBank
from .protocols import Domain
from .teacher import Teacher
from .train import TrainConfig, Trainer, training_device
from .types import Batch


@dataclass(frozen=True)
class LatentSpec:
    """One latent of a domain preset. ``teacher(domain)`` builds the teacher (only when a method uses it);
    ``layer`` a capture name or a relative depth in (0, 1] that the domain resolves; ``coefficient`` c_l relative
    to the preset's ``align_coefficient`` (``layer=PREDICTION``: matched on the denoiser's output by the process's
    ``distill``, no projector); ``time_weight`` w_l(t) per sample; ``standardize`` the teacher features
    per channel; ``cached``: features computed once per dataset item (``FeatureCache``) instead of on every batch;
    ``condition``: train the variational hybrid (the denoiser sees z w.p. A_t); ``pairs_per_token``: align a
    random subset of each token's pairs per step (pair latents; ``AlignmentSpec``); ``always``: part of every
    method (vanilla and REPA-style too) at weight ``coefficient`` alone, held constant outside the curriculum:
    for a prediction latent (distillation), which changes the data term rather than aligning a hidden state."""

    name: str
    teacher: Callable[[Domain], Teacher]
    layer: str | float
    coefficient: float = 1.0
    time_weight: TimeWeight = ConstantTime()
    standardize: bool = False
    cached: bool = False
    condition: bool = False
    pairs_per_token: int | None = None
    always: bool = False


_DECAYS = {"constant": None, "linear": Linear, "cosine": Cosine}


@dataclass(frozen=True)
class Curriculum:
    """REED's training recipe in fractions of the run: the generative loss ramps 0 -> 1 over ``warmup`` (after
    an alignment-only ``delay``); the alignment weight is 1 until the warm-up ends, then ``decay`` takes it to
    0 at the end of training (``constant``: no decay)."""

    warmup: float = 0.0
    delay: float = 0.0
    decay: Literal["constant", "linear", "cosine"] = "constant"

    def __post_init__(self) -> None:
        if not (0.0 <= self.warmup < 1.0 and 0.0 <= self.delay < 1.0):
            raise ValueError(f"warmup and delay are fractions in [0, 1), got {self.warmup}, {self.delay}")
        if self.decay not in _DECAYS:
            raise ValueError(f"decay must be one of {sorted(_DECAYS)}, got {self.decay!r}")

    def denoise(self, total_steps: int) -> Schedule:
        return WarmUp(max(1, round(self.warmup * total_steps)) if self.warmup > 0 else 0,
                      delay=round(self.delay * total_steps))

    def align(self, total_steps: int) -> Schedule:
        if _DECAYS[self.decay] is None:
            return Constant(1.0)
        warm = self.denoise(total_steps)
        return _DECAYS[self.decay](1.0, 0.0, warm.steps + warm.delay, max(warm.steps + warm.delay + 1, total_steps))


@dataclass(frozen=True)
class Method:
    latents: Literal["none", "repa", "all"]
    curriculum: bool


METHODS: dict[str, Method] = {"vanilla": Method("none", False), "repa": Method("repa", False),
                              "reed": Method("all", True)}


@dataclass(frozen=True)
class DomainPreset:
    """A domain's REED configuration. ``align_coefficient``: the paper's projection coefficient lambda."""

    latents: tuple[LatentSpec, ...]
    curriculum: Curriculum
    repa_latents: tuple[str, ...]
    align_coefficient: float = 0.5
    projector_hidden: int = 256

    def __post_init__(self) -> None:
        names = [s.name for s in self.latents]
        if len(set(names)) != len(names) or set(self.repa_latents) - set(names):
            raise ValueError(f"latent names must be unique and repa_latents among them; got {names}, {self.repa_latents}")

    def for_method(self, method: str) -> tuple[LatentSpec, ...]:
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        which = METHODS[method].latents
        return tuple(s for s in self.latents if s.always or which == "all" or (which == "repa" and s.name in self.repa_latents))


def run_train_config(steps: int, *, lr: float, seed: int, ema_decay: float, progress: bool = True,
                     max_warmup: int = 100, **kw: Any) -> TrainConfig:
    """Domain runs' optimisation settings: 20 log lines, 4 checkpoints, LR warm-up over 10 % (capped)."""
    return TrainConfig(max_steps=steps, lr=lr, seed=seed, ema_decay=ema_decay, progress=progress,
                       log_every=max(1, min(50, steps // 20)), checkpoint_every=max(1, steps // 4),
                       lr_warmup_steps=min(max_warmup, steps // 10), **kw)


def build_trainer(domain: Domain, preset: DomainPreset, method: str, train: TrainConfig, batch_size: int,
                  out_dir: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
                  device: str | None = None, progress: bool = True, run: dict[str, Any] | None = None) -> Trainer:
    """The model, objective, step-indexed data and trainer of ``method`` on ``domain`` with ``preset``.

    Random draws happen in a fixed order after seeding with ``train.seed``: denoiser, process, teachers in
    preset order, projectors (teachers first when a latent trains the hybrid: the denoiser needs their dims).
    """
    specs, reed = preset.for_method(method), METHODS[method].curriculum
    torch.manual_seed(train.seed)
    teachers = {s.name: s.teacher(domain) for s in specs} if any(s.condition for s in specs) else {}
    model = domain.build_model({s.name: teachers[s.name].dim for s in specs if s.condition})
    process = domain.build_process()
    teachers = teachers or {s.name: s.teacher(domain) for s in specs}
    caches = cache_features({s.name: teachers[s.name] for s in specs if s.cached}, domain.data, cache_dir,
                            device=training_device(device), progress=progress)
    aligns, dims, layers = [], {}, {}
    for s in specs:
        teacher = teachers[s.name]
        layer, width = (PREDICTION, None) if s.layer == PREDICTION else domain.capture(s.layer)
        aligns.append(AlignmentSpec(
            s.name, layer, teacher.granularity, teacher=None if s.cached else teacher,
            coefficient=s.coefficient if s.always else preset.align_coefficient * (s.coefficient if reed else 1.0),
            schedule=preset.curriculum.align(train.max_steps) if reed and not s.always else Constant(1.0),
            time_weight=s.time_weight, standardize=s.standardize, condition=s.condition,
            pairs_per_token=s.pairs_per_token))
        if width is not None:  # a prediction latent has no projector
            dims[s.name] = (width, teacher.dim)
        layers[s.name] = {"layer": layer, "granularity": teacher.granularity, "dim": teacher.dim}
    objective = REEDObjective(process, aligns, ProjectorBank(dims, hidden_dim=preset.projector_hidden),
                              denoise_schedule=preset.curriculum.denoise(train.max_steps) if reed else Constant(1.0))

    condition, augment = getattr(domain.data, "condition", None), getattr(domain.data, "augment", None)
    collate_rng = "rng" in inspect.signature(domain.data.collate).parameters  # e.g. random crop windows
    weights = None if domain.data.weights is None else list(domain.data.weights)
    sampler = StepSampler(len(domain.data), batch_size, seed=train.seed, weights=weights)

    def collate(items: np.ndarray, rng: np.random.Generator | None = None) -> Batch:
        x0 = domain.data.collate(items, rng) if collate_rng else domain.data.collate(items)
        if augment is not None and rng is not None:
            x0 = augment(x0, rng)
        return Batch(x0, condition(items) if condition else None, {n: c.representation(items, x0) for n, c in caches.items()})

    config = {"domain": domain.name, "method": method, **domain.model_config(), "run": dict(run or {}),
              "latents": layers}
    data = StepData(sampler, collate, seed=train.seed if augment is not None or collate_rng else None)
    return Trainer(model, objective, data, train, out_dir, model_config=config, device=device)
