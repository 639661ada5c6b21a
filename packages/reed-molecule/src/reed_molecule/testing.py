"""Test helpers: random padded molecule batches (no chemistry implied)."""

from __future__ import annotations

import torch

from .data import MoleculeBatch, remove_com


def random_molecules(batch: int = 3, atoms: int = 9, seed: int = 0, dtype: torch.dtype = torch.float64) -> MoleculeBatch:
    """``batch`` molecules padded to ``atoms``: sizes atoms, atoms-3, 4, ... (cycled), random types/bonds."""
    g = torch.Generator().manual_seed(seed)
    sizes = [atoms, max(2, atoms - 3), min(4, atoms)]
    counts = torch.tensor([sizes[i % 3] for i in range(batch)])
    mask = torch.arange(atoms)[None] < counts[:, None]
    pos = remove_com(torch.randn(batch, atoms, 3, generator=g, dtype=dtype) * 1.5, mask)
    kinds = torch.randint(0, 5, (batch, atoms), generator=g) * mask
    charges = torch.randint(0, 3, (batch, atoms), generator=g)
    upper = torch.triu(torch.randint(0, 4, (batch, atoms, atoms), generator=g), 1)
    x = MoleculeBatch(pos, kinds, charges, upper + upper.transpose(1, 2), mask, torch.arange(batch))
    return x.with_(bonds=x.bonds * x.pair_mask)
