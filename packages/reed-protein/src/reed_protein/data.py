"""The packed chain set (``data/chains.npz``, built from the project's real chains by
``scripts/pack_chains.py``) and padded protein batches."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from .constants import AA_TO_INDEX, CROPS, X_INDEX
from .features import knn_graph

SPLITS = {"train": 0, "valid": 1, "test": 2}
MISSING = -32768


def default_data_path() -> Path:
    env = os.environ.get("REED_PROTEIN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "chains.npz"


@dataclass(frozen=True)
class ProteinBatch:
    """``X`` (B,L,4,3) backbone N/CA/C/O in Å (0 where missing), ``S`` (B,L) residue indices, ``mask`` (B,L)
    True for residues with a complete N-CA-C backbone, ``residue_idx`` (B,L) numbering (gaps allowed; +100
    between chains), ``chain_idx`` (B,L) chain number (0 = padding), ``design_mask`` (B,L) True where the
    sequence is designed (the rest is fixed), ``index`` (B,) dataset index (-1 when unknown)."""

    X: torch.Tensor
    S: torch.Tensor
    mask: torch.Tensor
    residue_idx: torch.Tensor
    chain_idx: torch.Tensor
    design_mask: torch.Tensor
    index: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.X.shape[0])

    @property
    def device(self) -> torch.device:
        return self.X.device

    def to(self, device) -> ProteinBatch:
        return ProteinBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def with_(self, **kw) -> ProteinBatch:
        return replace(self, **kw)


def pad_batch(items: list[dict]) -> ProteinBatch:
    """Pad a list of dicts with X (L,4,3) float (NaN = missing), S (L,), residue_idx (L,), chain_idx (L,),
    optional design_mask (L,) and index."""
    L = max(len(it["S"]) for it in items)
    B = len(items)
    X = np.zeros((B, L, 4, 3), np.float32)
    S = np.full((B, L), X_INDEX, np.int64)
    mask = np.zeros((B, L), bool)
    ridx = np.zeros((B, L), np.int64)
    cidx = np.zeros((B, L), np.int64)
    design = np.zeros((B, L), bool)
    for b, it in enumerate(items):
        n = len(it["S"])
        x = np.asarray(it["X"], np.float32)
        ok = np.isfinite(x[:, :3]).all(axis=(1, 2))
        X[b, :n] = np.nan_to_num(x, nan=0.0)
        # a missing O (but complete N-CA-C) is placed at C so geometry stays finite
        no_o = ok & ~np.isfinite(x[:, 3]).all(-1)
        X[b, :n][no_o, 3] = X[b, :n][no_o, 2]
        S[b, :n] = it["S"]
        mask[b, :n] = ok
        ridx[b, :n] = it["residue_idx"]
        cidx[b, :n] = it["chain_idx"]
        design[b, :n] = it.get("design_mask", np.ones(n, bool)) & ok
    index = torch.tensor([it.get("index", -1) for it in items], dtype=torch.long)
    return ProteinBatch(torch.from_numpy(X), torch.from_numpy(S), torch.from_numpy(mask), torch.from_numpy(ridx),
                        torch.from_numpy(cidx), torch.from_numpy(design), index)


class ChainSet:
    """All packed chains; ``split(name)`` gives the indices of a split, ``item(i)`` one chain as a dict."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = Path(path) if path is not None else default_data_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: packed chain set not found (see scripts/pack_chains.py)")
        with np.load(path, allow_pickle=False) as z:
            self.names = z["names"]
            self.seq = str(z["seq"])
            self.offsets = z["offsets"]
            self.coords = z["coords"]
            self.centroids = z["centroids"]
            self.split_code = z["split"]
            self.cluster = z["cluster"]
            self.source = z["source"]
            self.source_names = z["source_names"]
            self.ts50 = z["ts50"]
        self.codes = np.array([AA_TO_INDEX.get(a, X_INDEX) for a in self.seq], np.int8)

    def __len__(self) -> int:
        return len(self.names)

    def split(self, name: str) -> np.ndarray:
        if name == "ts50":
            return np.nonzero(self.ts50)[0]
        if name not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS) + ['ts50']}, got {name!r}")
        return np.nonzero(self.split_code == SPLITS[name])[0]

    def cluster_weights(self, ids: np.ndarray) -> np.ndarray:
        """1 / (cluster size within ``ids``): sampling by these draws clusters uniformly."""
        _, inverse, counts = np.unique(self.cluster[ids], return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse]

    def item(self, i: int, max_length: int | None = None, crop_seed: int = 0, where: float | None = None) -> dict:
        """Chain ``i``; longer than ``max_length``, a window of that many residues starting at
        floor(where * (n - max_length + 1)) for ``where`` in [0, 1), else at a start fixed by (crop_seed, i)."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        q = self.coords[lo:hi].astype(np.float64)
        X = np.where(q == MISSING, np.nan, q / 100.0) + self.centroids[i]
        S = self.codes[lo:hi].astype(np.int64)
        n = hi - lo
        start = 0
        if max_length is not None and n > max_length:
            if where is None:
                start = int(np.random.default_rng([crop_seed, int(i)]).integers(0, n - max_length + 1))
            else:
                start = min(int(where * (n - max_length + 1)), n - max_length)
            n = max_length
        sl = slice(start, start + n)
        return {"X": X[sl], "S": S[sl], "residue_idx": np.arange(start, start + n), "chain_idx": np.ones(n, np.int64),
                "index": int(i), "name": str(self.names[i])}

    def batch(self, ids, max_length: int | None = None, crop_seed: int = 0, where=None) -> ProteinBatch:
        """Chains ``ids`` padded into one batch; ``where`` (one number in [0, 1) per chain) places the crop
        windows, else they are fixed by ``crop_seed`` (see ``item``)."""
        where = [None] * len(ids) if where is None else [float(w) for w in where]
        return pad_batch([self.item(int(i), max_length, crop_seed, w) for i, w in zip(ids, where, strict=True)])


class ProteinTrainingData:
    """``reed_core.TrainingData`` over training chains: items are positions in ``ids``, sampled so that clusters
    are drawn uniformly; a batch holds crops of at most ``max_length`` residues, a contiguous window of each
    longer chain: drawn anew at every step from the trainer's per-step generator (``crop="random"``, so every
    residue is trained on over the epochs and resuming stays exact) or fixed per chain and ``crop_seed``
    (``"fixed"``, and whenever ``collate`` gets no generator); a crop's window starts at its first residue's
    index in the chain. ``k``: the denoiser's neighbourhood size, for cached pair features (``pairs``).
    ``backbone_noise``: the standard deviation (Å) of Gaussian noise added to every backbone atom of a training
    batch (``augment``; ProteinMPNN's training augmentation, 0.2 Å in its ``v_48_020``), before teachers or the
    denoiser's kNN graph see it."""

    def __init__(self, chains: ChainSet, ids: np.ndarray, max_length: int | None = 256, crop_seed: int = 0,
                 k: int | None = None, backbone_noise: float = 0.0, crop: str = "random") -> None:
        if not (math.isfinite(backbone_noise) and backbone_noise >= 0):
            raise ValueError(f"backbone_noise must be a finite number of Å >= 0, got {backbone_noise}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.chains, self.ids, self.max_length, self.crop_seed = chains, np.asarray(ids), max_length, crop_seed
        self.crop = crop
        self.weights, self.k, self.backbone_noise = chains.cluster_weights(self.ids), k, float(backbone_noise)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.chains.offsets)[self.ids]

    def collate(self, items: np.ndarray, rng: np.random.Generator | None = None) -> ProteinBatch:
        ids = self.ids[items]
        where = rng.random(len(ids)) if self.crop == "random" and rng is not None else None
        return self.chains.batch(ids, self.max_length, crop_seed=self.crop_seed, where=where)

    def whole(self, items: np.ndarray) -> ProteinBatch:
        return self.chains.batch(self.ids[items])

    def window(self, x0: ProteinBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return x0.residue_idx[:, 0], x0.mask

    def augment(self, x0: ProteinBatch, rng: np.random.Generator) -> ProteinBatch:
        """``x0`` with ``backbone_noise`` Å of Gaussian noise on every atom (unchanged when it is 0)."""
        if self.backbone_noise == 0:
            return x0
        noise = torch.from_numpy(rng.standard_normal(tuple(x0.X.shape), dtype=np.float32))
        return x0.with_(X=x0.X + self.backbone_noise * noise.to(x0.X.dtype))

    def pairs(self, x0: ProteinBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's kNN edges of ``x0`` (the same ``knn_graph`` it runs): neighbours (B,L,k), edge mask."""
        if self.k is None:
            raise ValueError("cached pair features need the denoiser's neighbourhood size: ProteinTrainingData(k=...)")
        idx, _, edge_mask = knn_graph(x0.X.float(), x0.mask, self.k)
        return idx, edge_mask
