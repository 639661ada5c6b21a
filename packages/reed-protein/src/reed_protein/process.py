"""Masked (absorbing) discrete diffusion over sequences, t = 0 clean, t = 1 fully masked.

Each designable residue is replaced by the mask token independently with probability t. The default loss is
the ELBO's: cross-entropy on masked positions weighted by 1/t, averaged over the residues of the chain
(``"elbo"``); ``"smoothed"`` is the paper's variant: label-smoothed cross-entropy on every valid position.
``distill`` scores the prediction against a teacher's per-residue distribution the same way (a latent matched on
the prediction, ``reed_core.PREDICTION``: ProteinMPNN's structure-only profile or its distribution given the
visible residues, ``teacher_preset(distill=..., distill_from=...)``).
The ancestral sampler (``sampler.sample_sequences``) unmasks each still-masked residue with probability
(t - s) / t between times t > s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from reed_core import Corruption, Representation

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
        # u is also each residue's unmasking time in the reverse process: the visible residues were revealed in
        # order of decreasing u (the decoding order a conditional teacher is run in)
        return Corruption(x_t=x0.with_(S=S_t), t=t, target=x0.S,
                          extras={"masked": masked, "scored": x0.design_mask & (x0.S != X_INDEX), "unmask_time": u})

    def loss(self, logits: torch.Tensor, corruption: Corruption) -> torch.Tensor:
        smoothing = self.label_smoothing if self.loss_type == "smoothed" else 0.0
        ce = F.cross_entropy(logits.float().transpose(1, 2), corruption.target, reduction="none",
                             label_smoothing=smoothing)
        return self._reduce(ce, corruption)

    def distill(self, logits: torch.Tensor, corruption: Corruption, target: Representation) -> torch.Tensor:
        """KL(teacher || model) per residue, reduced over the residues exactly as ``loss`` reduces its
        cross-entropy (ELBO: masked residues, weight 1/t), (B,). ``target``: the teacher's log-probabilities over
        the 21 letters (B,L,21), X excluded and renormalised here (a designed residue is never X); residues outside
        its mask are not scored. The gradient is that of a cross-entropy against the teacher's distribution."""
        lp_t = target.features.float()[..., : X_INDEX + 1].clone()
        lp_t[..., X_INDEX] = float("-inf")
        lp_t = torch.log_softmax(lp_t, dim=-1)
        lp_s = torch.log_softmax(logits.float()[..., : X_INDEX + 1], dim=-1)
        p_t = lp_t.exp()
        kl = (p_t * (lp_t.clamp_min(-1e4) - lp_s)).sum(-1)
        keep = target.mask if target.mask is not None else torch.ones_like(kl, dtype=torch.bool)
        return self._reduce(kl * keep, corruption)

    def _reduce(self, per_residue: torch.Tensor, corruption: Corruption) -> torch.Tensor:
        """(B,L) -> (B,): the mean over scored residues (``smoothed``), or the ELBO's sum over masked scored residues
        / scored residues / t."""
        scored = corruption.extras["scored"].float()
        n = scored.sum(1).clamp_min(1.0)
        if self.loss_type == "smoothed":
            return (per_residue * scored).sum(1) / n
        w = corruption.extras["masked"].float() * scored
        return (per_residue * w).sum(1) / n / corruption.t.clamp_min(self.t_min)
