"""Tiny batches, a tiny capture-aware denoiser, a fixed random-projection teacher and a loss-curve check."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..teacher import Teacher
from ..types import Batch, DenoiserOutput, Granularity, Representation


def tiny_token_batch(batch_size: int = 4, length: int = 6, dim: int = 8, *, seed: int = 0,
                     min_length: int | None = None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token features (B,L,D) and a (B,L) mask with per-sample lengths in [min_length, L]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, length, dim, generator=g, dtype=dtype)
    lengths = torch.randint(length if min_length is None else min_length, length + 1, (batch_size,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return x * mask[..., None], mask


def tiny_pair_batch(batch_size: int = 2, length: int = 5, k: int = 3, dim: int = 8, *, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pair features (B,L,K,D) and a (B,L,K) mask with some padded edges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, length, k, dim, generator=g)
    mask = torch.rand(batch_size, length, k, generator=g) > 0.3
    mask[:, 0, 0] = True
    return x, mask


class TinyDenoiser(nn.Module):
    """A token-wise MLP denoiser over (B,L,D) inputs with a time embedding; captures ``"block{i}"`` hiddens.
    Accepts ``latents`` (the variational hybrid): pooled or token latents are embedded and added where ``keep``."""

    def __init__(self, dim: int = 8, hidden: int = 32, depth: int = 3, latent_dims: Mapping[str, int] | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.inp = nn.Linear(dim + 1, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.latent_embed = nn.ModuleDict({k: nn.Linear(d, hidden) for k, d in (latent_dims or {}).items()})

    def forward(self, x_t, t, cond=None, *, capture=(), latents=None) -> DenoiserOutput:
        tt = t.to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1))).expand(*x_t.shape[:-1], 1)
        h = self.inp(torch.cat([x_t, tt], dim=-1))
        for name, lat in (latents or {}).items():
            e = self.latent_embed[name](lat.z.to(h.dtype))  # (B,H) pooled or (B,L,H) token
            e = e[:, None, :] if e.dim() == 2 and h.dim() == 3 else e
            h = h + lat.keep.to(h.dtype).reshape(-1, *([1] * (h.dim() - 1))) * e
        hiddens = {}
        for i, block in enumerate(self.blocks):
            h = h + self.drop(block(h))
            if f"block{i}" in capture:
                hiddens[f"block{i}"] = h
        mask = cond.get("mask") if isinstance(cond, dict) else None
        return DenoiserOutput(self.out(h), hiddens, {k: mask for k in hiddens} if mask is not None else {})


class RandomProjectionTeacher(Teacher):
    """``z = tanh(view(batch) @ W1) @ W2`` with fixed random weights drawn from ``seed``. ``view(batch)`` returns
    (features, mask): token (B,L,D_in) with (B,L) mask, pair (B,L,K,D_in) with (B,L,K) mask, or pooled (B,D_in)
    with None; by default ``batch.x0`` as a token tensor."""

    def __init__(self, name: str, in_dim: int, dim: int, granularity: Granularity = "token",
                 view: Callable[[Batch], tuple[torch.Tensor, torch.Tensor | None]] | None = None, seed: int = 0,
                 hidden: int = 64) -> None:
        super().__init__(name, dim, granularity)
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(in_dim, hidden, generator=g) / in_dim**0.5, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(hidden, dim, generator=g) / hidden**0.5, requires_grad=False)
        self.view = view

    def encode(self, batch: Batch) -> Representation:
        x, mask = (batch.x0, None) if self.view is None else self.view(batch)
        return Representation(torch.tanh(x.to(self.w1.dtype) @ self.w1) @ self.w2, mask, self.granularity)


def assert_loss_decreases(losses: Sequence[float], *, window: int | None = None, min_drop: float = 0.1) -> None:
    """Assert the mean of the last ``window`` losses is at least ``min_drop`` (relative) below the mean of the
    first ``window``. ``window`` defaults to a fifth of the curve (at least 1)."""
    n, w = len(losses), window or max(1, len(losses) // 5)
    if n < 2 or 2 * w > n:
        raise ValueError(f"need at least 2 losses and a window of at most half of them, got {n} losses, window {w}")
    first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
    if not last <= first - min_drop * abs(first):
        raise AssertionError(f"loss did not fall by {min_drop:.0%}: first {w} mean {first:.5f}, last {w} mean {last:.5f}")
