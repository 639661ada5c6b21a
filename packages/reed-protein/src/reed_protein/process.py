"""Masked (absorbing) discrete diffusion over sequences, t = 0 clean, t = 1 fully masked.

Each designable residue is replaced by the mask token independently with probability t. The default loss is
the ELBO's: cross-entropy on masked positions weighted by 1/t, averaged over the residues of the chain
(``"elbo"``); ``"smoothed"`` is the paper's variant: label-smoothed cross-entropy on every valid position.
The ancestral sampler unmasks each still-masked residue with probability (t - s) / t between times t > s,
samples from softmax(logits / temperature) with X (and any omitted residue types) excluded, and never
touches fixed positions.
"""

from __future__ import annotations

from collections.abc import Callable
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

    @torch.no_grad()
    def sample(
        self,
        decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: ProteinBatch,
        *,
        num_steps: int = 20,
        temperature: float = 0.1,
        bias: torch.Tensor | None = None,
        omit: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Designed tokens (B,L) and the log-probability each designed token had when it was unmasked.

        ``decode(S, t)`` returns logits (B,L,21) for the current tokens. ``x.design_mask`` marks designable
        residues (the others keep ``x.S``). ``bias`` (21,) is added to the logits; ``omit`` (21,) bool
        excludes residue types. X is always excluded.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        design = x.design_mask
        S = torch.where(design, torch.full_like(x.S, MASK_INDEX), x.S)
        logp_tok = torch.zeros(S.shape, device=S.device)
        banned = torch.zeros(X_INDEX + 1, dtype=torch.bool, device=S.device)
        banned[X_INDEX] = True
        if omit is not None:
            banned |= omit.to(S.device)
        if bool(banned[:X_INDEX].all()):
            raise ValueError("every amino acid is omitted")
        times = torch.linspace(1.0, 0.0, num_steps + 1, device=S.device)
        for i in range(num_steps):
            t, s = times[i], times[i + 1]
            logits = decode(S, t.expand(S.shape[0])).float()
            if bias is not None:
                logits = logits + bias.to(logits)
            logits = logits.masked_fill(banned, float("-inf"))
            logp = F.log_softmax(logits / temperature, dim=-1)
            draw = torch.multinomial(logp.exp().flatten(0, 1), 1, generator=generator).view(S.shape)
            still = S == MASK_INDEX
            p_unmask = float((t - s) / t) if i < num_steps - 1 else 1.0
            go = still & (torch.rand(S.shape, device=S.device, generator=generator) < p_unmask)
            S = torch.where(go, draw, S)
            logp_tok = torch.where(go, F.log_softmax(logits, -1).gather(-1, draw[..., None]).squeeze(-1), logp_tok)
        return S, logp_tok
