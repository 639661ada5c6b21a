"""Tiny batches and a tiny capture-aware denoiser for tests of the objective and trainer."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..types import DenoiserOutput


def tiny_token_batch(
    batch_size: int = 4, length: int = 6, dim: int = 8, *, seed: int = 0, min_length: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token features (B,L,D) and a (B,L) mask with per-sample lengths in [min_length, L]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, length, dim, generator=g, dtype=dtype)
    lo = length if min_length is None else min_length
    lengths = torch.randint(lo, length + 1, (batch_size,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return x * mask[..., None], mask


def tiny_pair_batch(
    batch_size: int = 2, length: int = 5, k: int = 3, dim: int = 8, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pair features (B,L,K,D) and a (B,L,K) mask with some padded edges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, length, k, dim, generator=g)
    mask = torch.rand(batch_size, length, k, generator=g) > 0.3
    mask[:, 0, 0] = True
    return x, mask


class TinyDenoiser(nn.Module):
    """A token-wise MLP denoiser over (B,L,D) inputs with a time embedding; captures ``"block{i}"`` hiddens.

    Accepts ``latents`` (the variational hybrid): pooled latents are embedded and added where ``keep``.
    """

    def __init__(
        self, dim: int = 8, hidden: int = 32, depth: int = 3, latent_dims: Mapping[str, int] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.inp = nn.Linear(dim + 1, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.latent_embed = nn.ModuleDict({k: nn.Linear(d, hidden) for k, d in (latent_dims or {}).items()})

    def forward(self, x_t, t, cond=None, *, capture=(), latents=None) -> DenoiserOutput:
        tt = t.to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1))).expand(*x_t.shape[:-1], 1)
        h = self.inp(torch.cat([x_t, tt], dim=-1))
        if latents:
            for name, lat in latents.items():
                e = self.latent_embed[name](lat.z.to(h.dtype))  # (B,H) pooled or (B,L,H) token
                if e.dim() == 2 and h.dim() == 3:
                    e = e[:, None, :]
                keep = lat.keep.to(h.dtype).reshape(-1, *([1] * (h.dim() - 1)))
                h = h + keep * e
        hiddens = {}
        for i, block in enumerate(self.blocks):
            h = h + self.drop(block(h))
            if f"block{i}" in capture:
                hiddens[f"block{i}"] = h
        mask = cond.get("mask") if isinstance(cond, dict) else None
        masks = {k: mask for k in hiddens} if mask is not None else {}
        return DenoiserOutput(self.out(h), hiddens, masks)
