"""Step-indexed data: the batch of optimizer step s is a pure function of (seed, s), so resuming at any step
replays exactly the same data order, and distributed ranks / gradient-accumulation micro-batches take
disjoint slices of one global batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StepSampler:
    """Indices of the global batch of each step: epochs are seeded permutations of ``range(num_items)``
    (or of weighted draws when ``weights`` is given, e.g. one chain per cluster); the global batch of step s
    is the slice ``[s*B, (s+1)*B)`` of the concatenated epochs."""

    num_items: int
    global_batch_size: int
    seed: int = 0
    weights: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if self.num_items < 1 or self.global_batch_size < 1:
            raise ValueError(f"need num_items >= 1 and global_batch_size >= 1, got {self.num_items}, {self.global_batch_size}")
        if self.weights is not None and len(self.weights) != self.num_items:
            raise ValueError(f"weights has {len(self.weights)} entries for {self.num_items} items")

    def _epoch(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.weights is None:
            return rng.permutation(self.num_items)
        p = np.asarray(self.weights, dtype=np.float64)
        return rng.choice(self.num_items, size=self.num_items, replace=True, p=p / p.sum())

    def indices(self, step: int, shard: int = 0, num_shards: int = 1) -> np.ndarray:
        if self.global_batch_size % num_shards:
            raise ValueError(f"global batch {self.global_batch_size} is not divisible by {num_shards} shards")
        per = self.global_batch_size // num_shards
        start = step * self.global_batch_size + shard * per  # this shard's slice of the concatenated epochs
        first, last = start // self.num_items, (start + per - 1) // self.num_items
        order = np.concatenate([self._epoch(e) for e in range(first, last + 1)])
        return order[start - first * self.num_items: start - first * self.num_items + per]


@dataclass(frozen=True)
class StepData:
    """``data(step, shard, num_shards) -> batch`` for the trainer: a sampler plus a collate function that turns
    a list of indices into a ``Batch``. With a ``seed``, collate also gets a ``numpy.random.Generator`` seeded by
    (seed, step, shard), for random augmentation that resumes exactly."""

    sampler: StepSampler
    collate: Callable[..., Any]
    seed: int | None = None

    def __call__(self, step: int, shard: int = 0, num_shards: int = 1) -> Any:
        items = self.sampler.indices(step, shard, num_shards)
        if self.seed is None:
            return self.collate(items)
        return self.collate(items, np.random.default_rng([self.seed, step, shard]))
