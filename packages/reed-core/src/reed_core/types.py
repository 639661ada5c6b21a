"""Small frozen data types shared by every REED domain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Granularity = Literal["token", "pair", "pooled"]
GRANULARITIES: tuple[str, ...] = ("token", "pair", "pooled")

@dataclass(frozen=True)
class DenoiserOutput:
    """What a denoiser returns.

    ``prediction`` is whatever the process loss consumes (a tensor or a domain structure).
    ``hiddens`` maps captured layer names to hidden states: token (B,L,D), pair (B,L,K,D) or pooled (B,D).
    ``masks`` optionally maps the same names to bool masks (True = valid) of shape hidden.shape[:-1].
    """

    prediction: Any
    hiddens: Mapping[str, torch.Tensor] = field(default_factory=dict)
    masks: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Representation:
    """A teacher's target features ``features`` with ``mask`` (True = valid), of the given granularity.

    token: features (B,L,D), mask (B,L); pair: (B,L,K,D), mask (B,L,K); pooled: (B,D), mask None. ``index``
    (pair only, optional): (B,L,K) the token each pair (i, k) joins token i to; a cache needs it to store them.
    """

    features: torch.Tensor
    mask: torch.Tensor | None = None
    granularity: Granularity = "token"
    index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        expected = {"token": 3, "pair": 4, "pooled": 2}[self.granularity]
        if self.features.dim() != expected:
            raise ValueError(f"{self.granularity} representation needs {expected}-D features, got shape {tuple(self.features.shape)}")
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.features.shape[:-1]):
            raise ValueError(f"mask shape {tuple(self.mask.shape)} does not match features {tuple(self.features.shape)}")
        if self.index is not None and (self.granularity != "pair" or self.index.shape != self.features.shape[:-1]):
            raise ValueError(f"index {tuple(self.index.shape)} needs pair features of shape (B,L,K,D), got "
                             f"{self.granularity} {tuple(self.features.shape)}")


@dataclass(frozen=True)
class Corruption:
    """The result of ``process.corrupt``: the noisy input ``x_t``, the time ``t`` (B,) and the regression
    ``target`` the process loss compares the prediction with (x0, noise, velocity, ...). ``extras`` carries
    anything else the process loss needs (masks, the noise itself)."""

    x_t: Any
    t: torch.Tensor
    target: Any
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A training batch: the clean sample ``x0``, optional conditioning ``cond`` (class labels, structure...),
    and optional cached teacher ``representations`` keyed by latent name (used instead of calling a teacher)."""

    x0: Any
    cond: Any = None
    representations: Mapping[str, Representation] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(getattr(self.x0, "batch_size", None) or first_tensor(self.x0).shape[0])

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.x0, "device", None) or first_tensor(self.x0).device)


def first_tensor(x: Any) -> torch.Tensor:
    """The first tensor in a tensor / mapping / sequence structure (for its batch size and device)."""
    if isinstance(x, torch.Tensor):
        return x
    values = x.values() if isinstance(x, Mapping) else x if isinstance(x, (list, tuple)) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError("Batch.x0 must be a tensor, a mapping/sequence holding tensors, or expose `batch_size` and `device`")


@dataclass(frozen=True)
class LossTerms:
    """Every term of the REED objective, kept apart for logging.

    ``total``: the scalar that is back-propagated. ``denoise``: the (unweighted) process loss.
    ``align``: unweighted mean alignment loss per latent. ``weights``: the curriculum weight applied to each
    term at this step (``"denoise"`` and one entry per latent, coefficient included).
    """

    total: torch.Tensor
    denoise: torch.Tensor
    align: Mapping[str, torch.Tensor]
    weights: Mapping[str, float]

    def scalars(self) -> dict[str, float]:
        """Plain floats for logging."""
        return {"loss": float(self.total.detach()), "denoise": float(self.denoise.detach()),
                **{f"align/{k}": float(v.detach()) for k, v in self.align.items()},
                **{f"weight/{k}": float(v) for k, v in self.weights.items()}}
