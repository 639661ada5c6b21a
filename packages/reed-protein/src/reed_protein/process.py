"""Masked (absorbing) discrete diffusion over sequences, t = 0 clean, t = 1 fully masked.

Each designable residue is replaced by the mask token independently with probability t. The default loss is
the ELBO's: cross-entropy on masked positions weighted by 1/t, averaged over the residues of the chain
(``"elbo"``); ``"smoothed"`` is the paper's variant: label-smoothed cross-entropy on every valid position.
The ancestral sampler (``sampler.sample_sequences``) unmasks each still-masked residue with probability
(t - s) / t between times t > s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from reed_core import Corruption

from .constants import MASK_INDEX, X_INDEX
from .data import ProteinBatch

LossType = Literal["elbo", "smoothed"]


@dataclass(frozen=True)
class MaskedDiffusion:
    loss_type: LossType = "elbo"
    label_smoothing: float = 0.1
    t_min: float = 1e-3

    def __post_init__(self) -> None:
        if self.loss_type not in ("elbo", "smoothed"):
            raise ValueError(f"loss_type must be 'elbo' or 'smoothed', got {self.loss_type!r}")

    def sample_time(self, batch_size: int, *, device="cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        return self.t_min + (1 - self.t_min) * torch.rand(batch_size, device=device, generator=generator)

    def corrupt(self, x0: ProteinBatch, t: torch.Tensor, *, generator: torch.Generator | None = None) -> Corruption:
        u = torch.rand(x0.S.shape, device=x0.S.device, generator=generator)
        masked = (u < t[:, None]) & x0.design_mask
        S_t = torch.where(masked, torch.full_like(x0.S, MASK_INDEX), x0.S)
        return Corruption(x_t=x0.with_(S=S_t), t=t, target=x0.S,
                          extras={"masked": masked, "scored": x0.design_mask & (x0.S != X_INDEX)})

    def loss(self, logits: torch.Tensor, corruption: Corruption) -> torch.Tensor:
        target = corruption.target
        scored = corruption.extras["scored"].float()
        n = scored.sum(1).clamp_min(1.0)
        if self.loss_type == "smoothed":
            ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none",
                                 label_smoothing=self.label_smoothing)
            return (ce * scored).sum(1) / n
        ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
        w = corruption.extras["masked"].float() * scored
        return (ce * w).sum(1) / n / corruption.t.clamp_min(self.t_min)
