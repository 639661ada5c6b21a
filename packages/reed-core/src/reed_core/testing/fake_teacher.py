"""A deterministic random-projection teacher: a fixed random (non-linear) map of some view of the batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..teacher import Teacher
from ..types import Batch, Granularity, Representation


class RandomProjectionTeacher(Teacher):
    """``z = tanh(view(batch) @ W1) @ W2`` with fixed random weights drawn from ``seed``.

    ``view(batch)`` returns (features, mask): token (B,L,D_in) with (B,L) mask, pair (B,L,K,D_in) with
    (B,L,K) mask, or pooled (B,D_in) with None. Defaults to ``batch.x0`` as a token tensor.
    """

    def __init__(
        self,
        name: str,
        in_dim: int,
        dim: int,
        granularity: Granularity = "token",
        view: Callable[[Batch], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
        seed: int = 0,
        hidden: int = 64,
    ) -> None:
        super().__init__(name, dim, granularity)
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(in_dim, hidden, generator=g) / in_dim**0.5, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(hidden, dim, generator=g) / hidden**0.5, requires_grad=False)
        self.view = view

    def encode(self, batch: Batch) -> Representation:
        if self.view is None:
            x, mask = batch.x0, None
        else:
            x, mask = self.view(batch)
        z = torch.tanh(x.to(self.w1.dtype) @ self.w1) @ self.w2
        return Representation(z, mask, self.granularity)
