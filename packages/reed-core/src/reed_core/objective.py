r"""The REED objective: one model call, the process loss, every alignment term, the curriculum weights.

From the paper's bound to the terms computed here
-------------------------------------------------
REED models (x_{0:T}, z_1..z_L) where latent z_l enters the reverse chain at a step drawn from a weight
alpha_{l,t}. Its variational bound splits into

* **denoising terms** ``E_t[ KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t, z if t <= tau else none)) ]``. For the
  standard Gaussian / masking processes this is the process loss (``process.loss``: e.g. velocity MSE for
  SiT, masked cross-entropy for discrete diffusion) of a denoiser that sees z with probability
  A_{l,t} = sum_{s >= t} alpha_{l,s}. The usual REPA-style training drops the conditioning (A = 0): the
  denoiser is unconditional, and this is what ``REEDObjective`` does by default. With
  ``AlignmentSpec.condition=True`` it trains the *hybrid* conditional exactly as the bound asks: each sample
  is conditioned on its z_l with probability ``time_weight.cumulative(t)`` (= A_t) and unconditioned otherwise,
  which is what lets a sampler run unconditionally, with a given z, or with a self-predicted z
  (``latent_conditions``). The denoiser sees z as the alignment loss scores it: a direction (standardised first
  when the latent's target is), at unit RMS (``condition_features``), so a projector's z_hat, whose norm the
  cosine loss leaves free, enters at the scale the teacher's z was trained with.
* **representation-prediction terms** ``alpha_{l,t} * E[-log p(z_l | x_t)]``. With a von Mises-Fisher /
  cosine likelihood on L2-normalised features, ``-log p(z|x_t) = -kappa cos(z_hat(x_t), z) + const`` where
  ``z_hat`` is a projector head on a hidden state of the denoiser at the depth chosen for z_l. This is the
  alignment loss (``reed_core.alignment``) weighted **per sample** by ``w_l(t)`` (= alpha_{l,t} up to a
  constant; REPA: constant over t; RCG: all weight at t = T, ``TerminalTime``) and by a coefficient c_l.
* **prediction latents** (``layer=PREDICTION``): a teacher that predicts what the denoiser predicts (e.g. a
  pretrained model's per-residue amino-acid distribution) is matched on the denoiser's *output* instead of a
  projected hidden state: ``process.distill(prediction, corruption, z)`` (B,), e.g. the cross-entropy of the
  prediction against the teacher's distribution on the positions the process loss scores (distillation). The
  teacher may see the corruption (``Teacher.sees_corruption``: e.g. a pretrained model's distribution of the
  masked tokens given the visible ones, the exact target of the denoiser's own conditional). No projector; the
  coefficient, schedule and time weight act as for any latent. This is not in the paper's bound: it replaces
  part of the data term's one-hot target with the teacher's distribution.
* **curriculum**: the paper's training recipe reweights the two families over training with step schedules:
  ``total = mu(s) * L_denoise + sum_l lambda_l(s) * c_l * mean_b[w_l(t_b) * L_align_l(b)]``.

``LossTerms`` keeps every term apart: ``denoise`` is the unweighted process loss, ``align[name]`` the
unweighted mean alignment loss, ``weights`` the factor each got at this step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from .alignment import alignment_loss, masked_pool, standardize
from .curriculum import Constant, ConstantTime, Schedule, TimeWeight
from .projector import ProjectorBank
from .protocols import Process
from .teacher import Teacher
from .types import GRANULARITIES, Batch, Corruption, DenoiserOutput, Granularity, LossTerms, Representation

PREDICTION = "prediction"  # AlignmentSpec.layer of a latent matched on the denoiser's output (process.distill)


@dataclass(frozen=True, eq=False)
class AlignmentSpec:
    """One latent of the multi-latent objective.

    ``layer``: name of the captured hidden state, or ``PREDICTION``: the teacher is matched on the denoiser's
    output by the process's ``distill`` (no projector); ``teacher``: a ``Teacher`` called on the clean batch (and
    its corruption, for one that ``sees_corruption``), or None to read ``batch.representations[name]`` (cached
    features). ``coefficient`` c_l, ``schedule``
    lambda_l(step), ``time_weight`` w_l(t) per sample. ``pool``: how token hiddens are pooled for a pooled
    latent. ``condition``: train the variational hybrid (condition the denoiser on z with probability A_t).
    ``pairs_per_token`` (pair latents): align a random subset of this many of each token's K pairs per step (an
    unbiased estimate of the mean over all pairs, for a projector that many times cheaper); None: every pair.
    """

    name: str
    layer: str
    granularity: Granularity
    teacher: Teacher | None = None
    coefficient: float = 1.0
    schedule: Schedule = Constant(1.0)
    time_weight: TimeWeight = ConstantTime()
    standardize: bool = False
    pool: Literal["mean", "sum"] = "mean"
    condition: bool = False
    pairs_per_token: int | None = None

    def __post_init__(self) -> None:
        if self.pairs_per_token is not None and (self.granularity != "pair" or self.pairs_per_token < 1):
            raise ValueError(f"latent {self.name!r}: pairs_per_token needs a pair latent and >= 1, got "
                             f"{self.pairs_per_token} for a {self.granularity} latent")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.pool not in ("mean", "sum"):
            raise ValueError(f"pool must be 'mean' or 'sum', got {self.pool!r}")
        if self.layer == PREDICTION and (self.condition or self.pairs_per_token is not None):
            raise ValueError(f"latent {self.name!r} is matched on the prediction: it cannot condition the denoiser "
                             "or subsample pairs")
        if self.condition and self.teacher is not None and self.teacher.sees_corruption:
            raise ValueError(f"latent {self.name!r}: its teacher sees the corruption, so there is no z to condition "
                             "the denoiser on at sampling time")
        if self.teacher is not None and self.teacher.granularity != self.granularity:
            raise ValueError(f"latent {self.name!r}: teacher granularity {self.teacher.granularity} != spec {self.granularity}")


@dataclass(frozen=True)
class LatentCondition:
    """A representation handed to a hybrid denoiser: features ``z`` (pooled (B,D) or token (B,L,D)),
    their ``mask`` and ``keep`` (B,) bool: which samples see z (the others run unconditionally)."""

    z: torch.Tensor
    keep: torch.Tensor
    mask: torch.Tensor | None = None


def condition_features(spec: AlignmentSpec, z: torch.Tensor, mask: torch.Tensor | None = None, *,
                       predicted: bool = False) -> torch.Tensor:
    """What a hybrid denoiser is given for latent z: its direction at unit RMS, sqrt(D) z / |z| (a teacher's z
    standardised first when ``spec.standardize``; a ``predicted`` z_hat already lives in that space)."""
    if spec.standardize and not predicted:
        z = standardize(z, mask if spec.granularity != "pooled" else None)
    return nn.functional.normalize(z.float(), dim=-1) * z.shape[-1] ** 0.5


def target_for(spec: AlignmentSpec, batch: Batch, corruption: Corruption | None = None) -> Representation:
    """The teacher representation of latent ``spec`` for ``batch`` (cached features win over the teacher; a
    teacher that ``sees_corruption`` is given ``corruption`` too)."""
    if spec.name in batch.representations:
        rep = batch.representations[spec.name]
    elif spec.teacher is not None:
        rep = spec.teacher(batch, corruption)
    else:
        raise KeyError(f"latent {spec.name!r} has no teacher and the batch carries no cached representation")
    if rep.granularity != spec.granularity:
        raise ValueError(f"latent {spec.name!r}: representation is {rep.granularity}, spec wants {spec.granularity}")
    return replace(rep, features=rep.features.detach())


def _take_pairs(x: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
    """``x`` (B,L,K,...) at pairs ``idx`` (B,L,n) of each token."""
    if x is None or idx is None:
        return x
    return x.gather(2, idx.reshape(*idx.shape, *[1] * (x.dim() - 3)).expand(*idx.shape, *x.shape[3:]))


def project_hidden(spec: AlignmentSpec, projectors: ProjectorBank, out: DenoiserOutput, pairs: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """z_hat for latent ``spec`` from a captured hidden state (pooled first when the latent is pooled; at the
    pairs ``pairs`` (B,L,n) of each token when given)."""
    if spec.layer not in out.hiddens:
        raise KeyError(f"denoiser did not return hidden {spec.layer!r}; got {sorted(out.hiddens)}")
    h, h_mask = _take_pairs(out.hiddens[spec.layer], pairs), _take_pairs(out.masks.get(spec.layer), pairs)
    if spec.granularity == "pooled" and h.dim() == 3:
        h, h_mask = masked_pool(h, h_mask, spec.pool), None
    return projectors.project(spec.name, h), h_mask


class REEDObjective(nn.Module):
    """The multi-latent REED loss. Holds the projector bank (trained) and the teachers (frozen)."""

    def __init__(self, process: Process, specs: Sequence[AlignmentSpec] = (), projectors: ProjectorBank | None = None,
                 denoise_schedule: Schedule = Constant(1.0)) -> None:
        super().__init__()
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"latent names must be unique, got {names}")
        if missing := [s.name for s in specs if s.layer != PREDICTION and (projectors is None or s.name not in projectors)]:
            raise ValueError(f"no projector for latents {missing}")
        if (named := [s.name for s in specs if s.layer == PREDICTION]) and not callable(getattr(process, "distill", None)):
            raise ValueError(f"latents {named} are matched on the prediction, but {type(process).__name__} has no "
                             "distill(prediction, corruption, target)")
        self.process = process
        self.specs = tuple(specs)
        self.projectors = projectors if projectors is not None else ProjectorBank({})
        self.teachers = nn.ModuleDict({s.name: s.teacher.freeze() for s in specs if s.teacher is not None})
        self.denoise_schedule = denoise_schedule
        self.layers = tuple(dict.fromkeys(s.layer for s in specs if s.layer != PREDICTION))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.projectors.parameters() if p.requires_grad]

    def forward(self, model: nn.Module, batch: Batch, step: int, generator: torch.Generator | None = None) -> LossTerms:
        t = self.process.sample_time(batch.batch_size, device=batch.device, generator=generator)  # (B,)
        corruption = self.process.corrupt(batch.x0, t, generator=generator)
        targets = {s.name: target_for(s, batch, corruption) for s in self.specs}

        kwargs: dict[str, Any] = {"capture": self.layers}
        if hybrid := [s for s in self.specs if s.condition]:  # each sample sees its z with probability A_t
            kwargs["latents"] = {s.name: LatentCondition(
                condition_features(s, targets[s.name].features, targets[s.name].mask), torch.rand(t.shape, generator=generator, device=t.device)
                < s.time_weight.cumulative(t), targets[s.name].mask) for s in hybrid}
        out: DenoiserOutput = model(corruption.x_t, t, batch.cond, **kwargs)

        denoise = self.process.loss(out.prediction, corruption).mean()
        mu = float(self.denoise_schedule(step))
        total, align, weights = mu * denoise, {}, {"denoise": mu}
        for spec in self.specs:
            z = targets[spec.name]
            if spec.layer == PREDICTION:
                per_sample = self.process.distill(out.prediction, corruption, z)
            else:
                per_sample = self._align(spec, z, out, t, generator)
            w_t = spec.time_weight(t).to(per_sample.dtype)  # (B,) per-sample time weight
            weight = float(spec.coefficient * spec.schedule(step))
            total = total + weight * (w_t * per_sample).mean()
            align[spec.name] = per_sample.mean()
            weights[spec.name] = weight
        return LossTerms(total=total, denoise=denoise, align=align, weights=weights)

    def _align(self, spec: AlignmentSpec, z: Representation, out: DenoiserOutput, t: torch.Tensor,
               generator: torch.Generator | None) -> torch.Tensor:
        """The per-sample alignment loss (B,) of a hidden-state latent (its projector on the captured layer)."""
        pairs = None
        if spec.pairs_per_token is not None and spec.pairs_per_token < z.features.shape[2]:
            draw = torch.rand(z.features.shape[:3], generator=generator, device=t.device)
            pairs = draw.argsort(dim=-1)[..., : spec.pairs_per_token]  # (B,L,n) without replacement
        z_hat, h_mask = project_hidden(spec, self.projectors, out, pairs)
        mask = _take_pairs(z.mask, pairs) if z.mask is not None else h_mask
        return alignment_loss(spec.granularity, z_hat, _take_pairs(z.features, pairs), mask,
                              standardize_target=spec.standardize)


def latent_conditions(mode: Literal["none", "given", "self"], specs: Sequence[AlignmentSpec], *,
                      model: nn.Module | None = None, projectors: ProjectorBank | None = None, x_t: Any = None,
                      t: torch.Tensor | None = None, cond: Any = None,
                      given: Mapping[str, Representation] | None = None) -> dict[str, LatentCondition] | None:
    """Latents for sampling a hybrid denoiser.

    ``"none"``: unconditional (returns None). ``"given"``: condition every sample on ``given[name]``.
    ``"self"``: run the denoiser unconditionally at (x_t, t), project the captured hidden state with the
    trained projector and condition on that self-predicted z_hat.
    """
    hybrid = [s for s in specs if s.condition]
    if mode == "none" or not hybrid:
        return None
    if mode == "given":
        if given is None:
            raise ValueError("mode 'given' needs `given` representations")
        zs = {s.name: (condition_features(s, given[s.name].features, given[s.name].mask), given[s.name].mask)
              for s in hybrid}
    elif mode == "self":
        if model is None or projectors is None or t is None:
            raise ValueError("mode 'self' needs model, projectors, x_t and t")
        with torch.no_grad():
            pred = model(x_t, t, cond, capture=tuple(dict.fromkeys(s.layer for s in hybrid)))
        zs = {}
        for s in hybrid:
            z_hat, mask = project_hidden(s, projectors, pred)
            zs[s.name] = (condition_features(s, z_hat, predicted=True), mask)
    else:
        raise ValueError(f"mode must be 'none', 'given' or 'self', got {mode!r}")
    return {name: LatentCondition(z, torch.ones(z.shape[0], dtype=torch.bool, device=z.device), mask)
            for name, (z, mask) in zs.items()}
