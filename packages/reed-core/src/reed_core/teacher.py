"""The teacher interface: a frozen, eval-mode, no-grad encoder that maps a clean batch (or, for a teacher that
``sees_corruption``, the clean batch and its corruption) to a Representation."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .types import GRANULARITIES, Batch, Corruption, Granularity, Representation


class Teacher(nn.Module):
    """Base class for teachers. Subclasses implement ``encode(batch) -> Representation``; every quirk of the
    encoder (resizing, normalisation, dropping CLS tokens, residue/atom alignment) lives inside ``encode``.

    Calling a teacher always runs in eval mode without gradient; ``freeze()`` (called by the objective)
    turns off ``requires_grad`` on every parameter so the optimizer never sees them.

    A teacher whose target depends on what the denoiser is shown (e.g. a pretrained model's distribution of the
    hidden tokens given the visible ones, distilled into the prediction) sets ``sees_corruption = True`` and
    implements ``encode(batch, corruption)``; the objective calls it after corrupting the batch. Its features
    change at every step, so it cannot be cached.
    """

    sees_corruption: bool = False

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

    def forward(self, batch: Batch, corruption: Corruption | None = None) -> Representation:
        if self.sees_corruption and corruption is None:
            raise ValueError(f"teacher {self.name!r} sees the corruption: call it as teacher(batch, corruption)")
        with torch.no_grad():
            rep = self.encode(batch, corruption) if self.sees_corruption else self.encode(batch)
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
