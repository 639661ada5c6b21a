"""Teachers for molecules (the paper's UniMol/Frad weights are unreleased; these are offline substitutes).

* ``Graph2DTeacher`` ("graph2d", pooled): the *synthetic 2-D modality* of a 3-D molecule. RDKit turns the
  clean molecular graph into a hashed Morgan count fingerprint (radius 2, 512 bins, log1p) plus 12
  descriptors; features are standardised with statistics of the training split.
* ``Encoder3DTeacher`` ("encoder3d", token / per atom): a small EQGAT encoder pretrained in-project on the QM9
  training split by coordinate denoising (sigma 0.2 Å) and regression of 9 DFT properties
  (``pretrain_encoder3d``; weights ship in ``reed_molecule/weights``). Its per-atom scalars after the last
  layer are the target.

Both have cached variants: ``TeacherCache`` computes the features of a dataset once (progress bar) into the
cache directory and the collate function attaches them to ``Batch.representations``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reed_core import Batch, Representation, Teacher

from .constants import CHARGES
from .data import MoleculeBatch, QM9Dataset, remove_com
from .metrics import build_mol
from .model import EQGATDenoiser, ModelConfig

log = logging.getLogger(__name__)

FP_BITS = 512
DESCRIPTORS = ("MolWt", "TPSA", "NumHDonors", "NumHAcceptors", "NumRotatableBonds", "RingCount",
               "NumAromaticRings", "FractionCSP3", "MolLogP", "MolMR", "HeavyAtomCount", "NumValenceElectrons")
GRAPH2D_DIM = FP_BITS + len(DESCRIPTORS)


def graph2d_features(atoms: np.ndarray, bonds: np.ndarray, charges: np.ndarray) -> np.ndarray:
    """Raw 2-D features of one molecule (unstandardised): log1p Morgan counts + descriptors."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors, rdFingerprintGenerator

    mol = build_mol(atoms, bonds, charges)
    out = np.zeros(GRAPH2D_DIM, np.float32)
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return out
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=FP_BITS)
    out[:FP_BITS] = np.log1p(gen.GetCountFingerprintAsNumPy(mol).astype(np.float32))
    for k, name in enumerate(DESCRIPTORS):
        try:
            out[FP_BITS + k] = float(getattr(Descriptors, name)(mol))
        except Exception:  # noqa: BLE001 - descriptor failures leave 0
            out[FP_BITS + k] = 0.0
    return out


def _batch_graph2d(x0: MoleculeBatch) -> np.ndarray:
    a = x0.numpy()
    feats = []
    for b in range(len(a["mask"])):
        n = int(a["mask"][b].sum())
        charges = np.asarray(CHARGES)[a["charges"][b, :n]]
        feats.append(graph2d_features(a["atoms"][b, :n], a["bonds"][b, :n, :n], charges))
    return np.stack(feats)


class Graph2DTeacher(Teacher):
    """Pooled RDKit graph features, standardised with (mean, std) buffers fitted on training molecules."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        super().__init__("graph2d", GRAPH2D_DIM, "pooled")
        mean = np.zeros(GRAPH2D_DIM, np.float32) if mean is None else mean
        std = np.ones(GRAPH2D_DIM, np.float32) if std is None else std
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std

    def encode(self, batch: Batch) -> Representation:
        raw = torch.from_numpy(_batch_graph2d(batch.x0)).to(self.mean.device)
        return Representation(self.standardize(raw), None, "pooled")


# ----------------------------------------------------------------------------------------- 3-D encoder

ENCODER3D_CONFIG = ModelConfig(layers=3, scalars=64, vectors=16, edges=16, heads=4)
ENCODER3D_TIME = 0.05  # the encoder is run as a denoiser at this (small) fixed noise level
PRETRAIN_SIGMA = 0.2


class Encoder3D(nn.Module):
    """EQGAT encoder of a clean 3-D molecule (atom types and coordinates only) with pretraining heads."""

    def __init__(self, cfg: ModelConfig = ENCODER3D_CONFIG, num_properties: int = 9) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = EQGATDenoiser(cfg)
        self.property_head = nn.Sequential(nn.Linear(cfg.scalars, cfg.scalars), nn.SiLU(),
                                           nn.Linear(cfg.scalars, num_properties))

    def forward(self, mol: MoleculeBatch):
        plain = mol.with_(charges=torch.full_like(mol.charges, 1), bonds=torch.zeros_like(mol.bonds))
        t = torch.full((mol.batch_size,), ENCODER3D_TIME, device=mol.pos.device, dtype=mol.pos.dtype)
        out = self.net(plain, t, capture=(f"layer{self.cfg.layers}",))
        h = out.hiddens[f"layer{self.cfg.layers}"]  # (B,N,S)
        m = mol.mask.to(h.dtype)[..., None]
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return h, out.prediction.pos, self.property_head(pooled)


def default_encoder3d_path() -> Path:
    return Path(str(resources.files("reed_molecule") / "weights" / "encoder3d.safetensors"))


class Encoder3DTeacher(Teacher):
    """Per-atom features of the pretrained 3-D encoder (token granularity, atom mask)."""

    def __init__(self, encoder: Encoder3D | None = None, weights: str | os.PathLike | None = None) -> None:
        enc = encoder or Encoder3D()
        super().__init__("encoder3d", enc.cfg.scalars, "token")
        self.encoder = enc
        if encoder is None:
            path = Path(weights) if weights is not None else default_encoder3d_path()
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no encoder3d weights (train them with `reed-molecule pretrain-teacher`)")
            from safetensors.torch import load_file

            self.encoder.load_state_dict(load_file(str(path)))
        self.freeze()

    def encode(self, batch: Batch) -> Representation:
        h, _, _ = self.encoder(batch.x0)
        return Representation(h, batch.x0.mask, "token")


def pretrain_encoder3d(dataset: QM9Dataset, steps: int, batch_size: int = 64, lr: float = 1e-3,
                       seed: int = 0, device: str = "cpu", progress: bool = True) -> tuple[Encoder3D, dict]:
    """Coordinate denoising + standardised property regression on the training split."""
    from tqdm.auto import tqdm

    from .qm9 import load_raw

    torch.manual_seed(seed)
    raw = load_raw(progress=progress)["properties"][dataset.ids]
    mean, std = raw.mean(0), raw.std(0) + 1e-8
    props = torch.from_numpy(((raw - mean) / std).astype(np.float32))
    enc = Encoder3D().to(device)
    opt = torch.optim.AdamW(enc.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="pretraining encoder3d", disable=not progress):
        pos_ids = rng.integers(0, len(dataset), batch_size)
        mol = dataset.collate(pos_ids)
        noise = remove_com(torch.randn(mol.pos.shape, generator=g), mol.mask) * PRETRAIN_SIGMA
        noisy = mol.with_(pos=mol.pos + noise).to(device)
        _, pos_hat, prop_hat = enc(noisy)
        m = mol.mask.to(device).float()
        coord = (((pos_hat - mol.pos.to(device)) ** 2).sum(-1) * m).sum() / m.sum()
        prop = ((prop_hat - props[pos_ids].to(device)) ** 2).mean()
        loss = coord / PRETRAIN_SIGMA**2 + prop
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        history.append({"step": step + 1, "coord_mse": coord.item(), "property_mse": prop.item()})
    info = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "sigma": PRETRAIN_SIGMA,
            "seconds": time.perf_counter() - start, "final": history[-1], "first": history[0],
            "config": asdict(ENCODER3D_CONFIG)}
    return enc.cpu(), info


# ----------------------------------------------------------------------------------------------- caches


class TeacherCache:
    """Features of a teacher for every molecule of a dataset, computed once into the cache directory.
    Pooled features are (M,D); token features are stored flat per atom with the dataset's atom offsets."""

    def __init__(self, teacher: Teacher, dataset: QM9Dataset, cache: str | os.PathLike | None = None,
                 batch_size: int = 256, progress: bool = True) -> None:
        from .qm9 import cache_dir

        self.teacher, self.dataset = teacher, dataset
        key = hashlib.sha256()
        for k, v in sorted(teacher.state_dict().items()):
            key.update(k.encode())
            key.update(v.detach().cpu().numpy().tobytes())
        key.update(dataset.ids.tobytes())
        path = cache_dir(cache) / f"teacher_{teacher.name}_{key.hexdigest()[:16]}.npy"
        if path.is_file():
            self.features = np.load(path, mmap_mode="r")
        else:
            self.features = self._compute(batch_size, progress)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, self.features)
            os.replace(tmp, path)
        counts = dataset.all.num_atoms[dataset.ids]
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def _compute(self, batch_size: int, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        out = []
        for lo in tqdm(range(0, len(self.dataset), batch_size), desc=f"caching {self.teacher.name} features",
                       disable=not progress):
            pos = np.arange(lo, min(lo + batch_size, len(self.dataset)))
            rep = self.teacher(Batch(x0=self.dataset.collate(pos)))
            f = rep.features.float().cpu().numpy()
            if rep.granularity == "token":
                f = f[rep.mask.cpu().numpy()]
            out.append(f.astype(np.float16))
        return np.concatenate(out)

    def representation(self, positions: np.ndarray, max_atoms: int) -> Representation:
        positions = np.asarray(positions)
        if self.teacher.granularity == "pooled":
            return Representation(torch.from_numpy(np.asarray(self.features[positions], np.float32)), None, "pooled")
        counts = self.offsets[positions + 1] - self.offsets[positions]
        mask = np.arange(max_atoms)[None, :] < counts[:, None]
        flat = (self.offsets[positions][:, None] + np.arange(max_atoms)[None, :])[mask]
        feats = np.zeros((len(positions), max_atoms, self.features.shape[1]), np.float32)
        feats[mask] = self.features[flat]
        return Representation(torch.from_numpy(feats), torch.from_numpy(mask), "token")


def fit_graph2d_teacher(dataset: QM9Dataset, sample: int = 5000, seed: int = 0) -> Graph2DTeacher:
    """A Graph2DTeacher standardised with statistics of ``sample`` training molecules."""
    rng = np.random.default_rng(seed)
    pos = rng.choice(len(dataset), size=min(sample, len(dataset)), replace=False)
    raw = np.concatenate([_batch_graph2d(dataset.collate(pos[i:i + 512])) for i in range(0, len(pos), 512)])
    return Graph2DTeacher(raw.mean(0), raw.std(0))


def save_encoder3d(enc: Encoder3D, info: dict, path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))


__all__ = ["Encoder3D", "Encoder3DTeacher", "Graph2DTeacher", "TeacherCache", "fit_graph2d_teacher",
           "graph2d_features", "pretrain_encoder3d", "save_encoder3d"]
