"""A small deterministic training setup shared by the trainer tests and the DDP worker script."""

import torch

from reed_core import (
    AlignmentSpec,
    Batch,
    LinearInterpolant,
    ProjectorBank,
    REEDObjective,
    StepData,
    StepSampler,
)
from reed_core.testing import RandomProjectionTeacher, TinyDenoiser


def build(dropout: float = 0.1, nan_at: int | None = None, seed: int = 0, init_seed: int = 0):
    torch.manual_seed(init_seed)
    data = torch.randn(64, 4, 8, generator=torch.Generator().manual_seed(42))

    def collate(idx):
        x = data[torch.as_tensor(idx)]
        return Batch(x0=x)

    loader = StepData(StepSampler(len(data), 8, seed=seed), collate)

    def maybe_nan(step, shard=0, num_shards=1):
        b = loader(step, shard, num_shards)
        if nan_at is not None and step == nan_at:
            return Batch(x0=b.x0 * float("nan"))
        return b

    model = TinyDenoiser(8, 32, 3, dropout=dropout)
    teacher = RandomProjectionTeacher("fake", 8, 6, "token")
    spec = AlignmentSpec("fake", "block1", "token", teacher=teacher, coefficient=0.5)
    obj = REEDObjective(LinearInterpolant(), [spec], ProjectorBank({"fake": (32, 6)}, hidden_dim=16))
    return model, obj, maybe_nan
