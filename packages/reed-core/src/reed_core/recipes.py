"""The three training methods every benchmark compares, built the same way in every domain.

* ``vanilla``: the process loss alone;
* ``repa``: REPA-style: the given latent(s) with a constant coefficient, no curriculum;
* ``reed``: the given latents with their REED coefficients, the curriculum's alignment schedule and the
  generative-loss warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .curriculum import Constant, CurriculumPreset
from .objective import AlignmentSpec, Process, REEDObjective
from .projector import ProjectorBank
from .teacher import Teacher
from .train import TrainConfig
from .types import Granularity

METHODS: tuple[str, ...] = ("vanilla", "repa", "reed")


@dataclass(frozen=True, eq=False)
class LatentPlan:
    """A latent a domain offers: where it is aligned, its teacher (None: cached features in the batch), the
    teacher's feature size, and its coefficient under REED."""

    name: str
    layer: str
    granularity: Granularity
    dim: int
    reed_coefficient: float
    teacher: Teacher | None = None
    standardize: bool = False


def method_objective(method: str, process: Process, latents: Sequence[LatentPlan], *, student_dim: int,
                     curriculum: CurriculumPreset, repa_coefficient: float, projector_hidden: int) -> REEDObjective:
    """The objective of ``method`` with ``latents`` (the caller picks which latents a method uses)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "vanilla" and latents:
        raise ValueError("vanilla training takes no latents")
    reed = method == "reed"
    specs = [
        AlignmentSpec(p.name, p.layer, p.granularity, teacher=p.teacher,
                      coefficient=p.reed_coefficient if reed else repa_coefficient,
                      schedule=curriculum.align if reed else Constant(1.0), standardize=p.standardize)
        for p in latents
    ]
    projectors = ProjectorBank({p.name: (student_dim, p.dim) for p in latents}, hidden_dim=projector_hidden)
    return REEDObjective(process, specs, projectors, denoise_schedule=curriculum.denoise if reed else Constant(1.0))


def run_train_config(steps: int, *, lr: float, seed: int, ema_decay: float, progress: bool = True,
                     max_warmup: int = 100) -> TrainConfig:
    """The benchmarks' optimisation settings: 20 log lines, 4 checkpoints, LR warm-up over 10 % (capped)."""
    return TrainConfig(max_steps=steps, lr=lr, seed=seed, ema_decay=ema_decay, progress=progress,
                       log_every=max(1, min(50, steps // 20)), checkpoint_every=max(1, steps // 4),
                       lr_warmup_steps=min(max_warmup, steps // 10))
