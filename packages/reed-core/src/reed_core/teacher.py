"""The teacher interface: a frozen, eval-mode, no-grad encoder that maps a clean batch to a Representation."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .types import GRANULARITIES, Batch, Granularity, Representation


class Teacher(nn.Module):
    """Base class for teachers. Subclasses implement ``encode(batch) -> Representation``; every quirk of the
    encoder (resizing, normalisation, dropping CLS tokens, residue/atom alignment) lives inside ``encode``.

    Calling a teacher always runs in eval mode without gradient; ``freeze()`` (called by the objective)
    turns off ``requires_grad`` on every parameter so the optimizer never sees them.
    """

    def __init__(self, name: str, dim: int, granularity: Granularity) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.name, self.dim, self.granularity = name, int(dim), granularity

    def encode(self, batch: Batch) -> Representation:  # pragma: no cover - interface
        raise NotImplementedError

    def freeze(self) -> Teacher:
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # a teacher never leaves eval mode

    def forward(self, batch: Batch) -> Representation:
        with torch.no_grad():
            rep = self.encode(batch)
        if rep.granularity != self.granularity:
            raise ValueError(f"teacher {self.name!r} declared {self.granularity} but returned {rep.granularity}")
        if rep.features.shape[-1] != self.dim:
            raise ValueError(f"teacher {self.name!r} declared dim {self.dim} but returned {rep.features.shape[-1]}")
        return replace(rep, features=rep.features.detach())

    def extra_repr(self) -> str:
        """Also part of a feature cache's key: a subclass adds every setting that changes its features."""
        return f"name={self.name!r}, dim={self.dim}, granularity={self.granularity!r}"


def load_frozen_weights(module: nn.Module, path: str | os.PathLike, how_to_make: str) -> None:
    """Fill a teacher's network from a ``.safetensors`` file; a missing file says how to make one."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no teacher weights ({how_to_make})")
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))


class FunctionTeacher(Teacher):
    """A teacher from a plain function ``fn(batch) -> Tensor`` (features) or ``-> Representation``.
    Useful for hand-built features (geometry, fingerprints) that need no weights."""

    def __init__(self, name: str, dim: int, granularity: Granularity, fn: Any) -> None:
        super().__init__(name, dim, granularity)
        self.fn = fn

    def encode(self, batch: Batch) -> Representation:
        out = self.fn(batch)
        return out if isinstance(out, Representation) else Representation(out, None, self.granularity)
