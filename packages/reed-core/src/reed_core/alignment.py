"""Alignment losses between projected student features ``z_hat`` and teacher features ``z``.

All losses are the negative cosine similarity of L2-normalised features (REPA's choice; minimum -1 when
``z_hat`` is parallel to ``z``), computed in float32 even under mixed precision, averaged over the valid
positions of each sample, and returned per sample with shape (B,). A sample without any valid position
contributes 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .types import GRANULARITIES, Granularity

_EPS = 1e-6


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over every dim but the first, ignoring positions where ``mask`` is False. values: (B, ...)."""
    if mask is None:
        return values.flatten(1).mean(dim=1)
    mask = mask.to(values.dtype)
    return (values * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp_min(1.0)


def masked_pool(h: torch.Tensor, mask: torch.Tensor | None, mode: str = "mean") -> torch.Tensor:
    """Pool token features (B,L,D) to (B,D) with a (B,L) bool mask; ``mode`` is "mean" or "sum"."""
    if mode not in ("mean", "sum"):
        raise ValueError(f"pool mode must be 'mean' or 'sum', got {mode!r}")
    if mask is None:
        return h.mean(dim=1) if mode == "mean" else h.sum(dim=1)
    m = mask.to(h.dtype).unsqueeze(-1)  # (B,L,1)
    total = (h * m).sum(dim=1)
    return total if mode == "sum" else total / m.sum(dim=1).clamp_min(1.0)


def standardize(z: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel standardisation of teacher features over every valid position of the batch."""
    z32 = z.float()
    flat = z32.reshape(-1, z32.shape[-1])
    flat = flat if mask is None else flat[mask.reshape(-1)]
    if flat.shape[0] < 2:
        return z32
    return (z32 - flat.mean(dim=0)) / (flat.std(dim=0, unbiased=False) + eps)


def negative_cosine(z_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(z_hat, z) along the last dim, float32, shape z.shape[:-1]."""
    if z_hat.shape != z.shape:
        raise ValueError(f"student {tuple(z_hat.shape)} and teacher {tuple(z.shape)} features differ in shape")
    return -(F.normalize(z_hat.float(), dim=-1, eps=_EPS) * F.normalize(z.float(), dim=-1, eps=_EPS)).sum(dim=-1)


def token_alignment(z_hat: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Token granularity: z_hat, z (B,L,D), mask (B,L) -> (B,)."""
    if z.dim() != 3:
        raise ValueError(f"token alignment expects (B,L,D) features, got {tuple(z.shape)}")
    return masked_mean(negative_cosine(z_hat, z), mask)


def pair_alignment(z_hat: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pair granularity: z_hat, z (B,L,K,D), mask (B,L,K) -> (B,)."""
    if z.dim() != 4:
        raise ValueError(f"pair alignment expects (B,L,K,D) features, got {tuple(z.shape)}")
    return masked_mean(negative_cosine(z_hat, z), mask)


def pooled_alignment(z_hat: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled granularity: z_hat, z (B,D) -> (B,). ``mask`` (B,) marks samples that have a target."""
    if z.dim() != 2:
        raise ValueError(f"pooled alignment expects (B,D) features, got {tuple(z.shape)}")
    loss = negative_cosine(z_hat, z)
    return loss if mask is None else loss * mask.to(loss.dtype)


ALIGNMENT_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"token": token_alignment, "pair": pair_alignment,
                                                            "pooled": pooled_alignment}


def alignment_loss(granularity: Granularity, z_hat: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                   *, standardize_target: bool = False) -> torch.Tensor:
    """Dispatch on ``granularity``; optionally standardise the teacher features per channel first."""
    if granularity not in ALIGNMENT_LOSSES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if standardize_target:
        z = standardize(z, mask if granularity != "pooled" else None)
    return ALIGNMENT_LOSSES[granularity](z_hat, z, mask)
