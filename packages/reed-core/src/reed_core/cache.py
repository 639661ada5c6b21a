"""Teacher features computed once per dataset item and indexed like the training inputs.

Token features are stored flat (all tokens of item 0, then item 1, ...) with item offsets; pooled features as
(N, D). A batch row that is a crop (a contiguous window of its item, see ``TrainingData.window``) gets the
features of exactly those tokens, so features see the whole item whatever the crop. Storage is float16; with
a ``cache_dir`` the array is written once (atomically) under a key of the teacher's weights and the items
(``data.ids``: which dataset entries the items are, so two subsets never share a file).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .protocols import TrainingData
from .teacher import Teacher
from .types import Batch, Representation

log = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, teacher: Teacher, data: TrainingData, cache_dir: str | os.PathLike | None = None, *,
                 batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True) -> None:
        if teacher.granularity == "pair":
            raise ValueError(f"teacher {teacher.name!r}: pair features depend on the crop's graph; run it on the fly")
        self.name, self.granularity, self.data = teacher.name, teacher.granularity, data
        lengths = np.asarray(data.lengths, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        path = None
        if cache_dir is not None:
            ids = getattr(data, "ids", None)
            if ids is None:
                raise ValueError(f"teacher {teacher.name!r}: an on-disk feature cache needs `ids` on the training data")
            key = hashlib.sha256(np.asarray(ids, np.int64).tobytes() + lengths.tobytes())
            for k, v in sorted(teacher.state_dict().items()):
                key.update(k.encode() + v.detach().cpu().numpy().tobytes())
            path = Path(cache_dir) / f"teacher_{teacher.name}_{key.hexdigest()[:16]}.npy"
        if path is not None and path.is_file():
            self.features = np.load(path, mmap_mode="r")
            return
        self.features = self._compute(teacher.to(device), torch.device(device), lengths, batch_size, progress)
        if path is not None:  # written once, atomically
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, self.features)
            os.replace(tmp, path)
            log.info("cached %s features in %s", teacher.name, path)

    def _compute(self, teacher: Teacher, device: torch.device, lengths: np.ndarray, batch_size: int,
                 progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        order = np.argsort(lengths, kind="stable")  # little padding per batch
        out = np.zeros((self.offsets[-1] if self.granularity == "token" else len(lengths), teacher.dim), np.float16)
        for lo in tqdm(range(0, len(order), batch_size), desc=f"caching {teacher.name} features", disable=not progress):
            items = order[lo:lo + batch_size]
            cond = self.data.condition(items).to(device) if hasattr(self.data, "condition") else None
            f = teacher(Batch(self.data.whole(items).to(device), cond)).features.float().cpu().numpy()
            if self.granularity == "pooled":
                out[items] = f
                continue
            pos = np.arange(f.shape[1])
            keep = pos[None, :] < lengths[items][:, None]  # (B,L) real tokens of each whole item
            out[(self.offsets[items][:, None] + pos[None, :])[keep]] = f[keep]
        return out

    def representation(self, items: np.ndarray, x0) -> Representation:
        """Features of the batch rows built from ``items`` (the same indices ``collate`` got)."""
        if self.granularity == "pooled":
            return Representation(torch.from_numpy(np.asarray(self.features[np.asarray(items)], np.float32)), None, "pooled")
        start, mask = self.data.window(x0)
        m = mask.cpu().numpy()
        flat = self.offsets[items][:, None] + start.cpu().numpy()[:, None] + np.arange(m.shape[1])[None, :]
        feats = np.zeros((*m.shape, self.features.shape[1]), np.float32)
        feats[m] = self.features[flat[m]]
        return Representation(torch.from_numpy(feats), mask, "token")
