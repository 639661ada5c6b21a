"""Teachers for molecules (the paper's UniMol/Frad weights are unreleased; these are offline substitutes).

* ``Graph2DTeacher`` ("graph2d", pooled): the *synthetic 2-D modality* of a 3-D molecule. RDKit turns the
  clean molecular graph into a hashed Morgan count fingerprint (radius 2, 512 bins, log1p) plus 12
  descriptors; features are standardised with statistics of the training split.
* ``Encoder3DTeacher`` ("encoder3d", token / per atom): a small EQGAT encoder pretrained in-project on the QM9
  training split by coordinate denoising (sigma 0.2 Å) and regression of 9 DFT properties
  (``pretrain_encoder3d``; weights ship in ``reed_molecule/weights``). Its per-atom scalars after the last
  layer are the target.

The molecule preset caches both (``reed_core.FeatureCache``: computed once per training molecule).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reed_core import (
    Batch,
    Corruption,
    DenoiserOutput,
    REEDObjective,
    Representation,
    StepData,
    StepSampler,
    Teacher,
    TrainConfig,
    Trainer,
)
from reed_core.teacher import load_frozen_weights

from .chem import build_mol
from .constants import CHARGES
from .data import MoleculeBatch, QM9Dataset, remove_com
from .model import EQGATDenoiser, ModelConfig

__all__ = ["Encoder3D", "Encoder3DTeacher", "EncoderPretraining", "Graph2DTeacher", "fit_graph2d_teacher",
           "graph2d_features", "pretrain_encoder3d", "save_encoder3d"]

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

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None, lookup=None) -> None:
        super().__init__("graph2d", GRAPH2D_DIM, "pooled")
        self.lookup = lookup  # raw features by dataset row (a training pack's ``Graph2DLookup``): no RDKit
        mean = np.zeros(GRAPH2D_DIM, np.float32) if mean is None else mean
        std = np.ones(GRAPH2D_DIM, np.float32) if std is None else std
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std

    def encode(self, batch: Batch) -> Representation:
        x0 = batch.x0
        if self.lookup is not None and bool((x0.index < 0).any()):
            raise ValueError("the packed 2-D teacher knows dataset molecules only (a batch row has no dataset index)")
        raw = self.lookup(x0.index.cpu().numpy()) if self.lookup is not None else _batch_graph2d(x0)
        raw = torch.from_numpy(raw).to(self.mean.device)
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
            load_frozen_weights(self.encoder, weights or default_encoder3d_path(),
                                "train them with packages/reed-molecule/scripts/train_encoder3d.py")
        self.freeze()

    def encode(self, batch: Batch) -> Representation:
        h, _, _ = self.encoder(batch.x0)
        return Representation(h, batch.x0.mask, "token")


@dataclass(frozen=True)
class PretrainBatch:
    """Molecules with their standardised DFT properties (B,P), for pretraining the 3-D encoder."""

    mol: MoleculeBatch
    properties: torch.Tensor
    batch_size = property(lambda self: self.mol.batch_size)
    device = property(lambda self: self.mol.device)

    def to(self, device) -> PretrainBatch:
        return PretrainBatch(self.mol.to(device), self.properties.to(device))


class EncoderPretraining:
    """The pretraining task as a REED process: coordinates noised at ``sigma`` Å (zero CoM), per-sample loss
    coordinate MSE / sigma^2 + property MSE. The encoder runs at the fixed time ``ENCODER3D_TIME``."""

    def __init__(self, sigma: float = PRETRAIN_SIGMA) -> None:
        self.sigma = sigma

    def sample_time(self, batch_size: int, *, device, generator=None) -> torch.Tensor:
        return torch.full((batch_size,), ENCODER3D_TIME, device=device)

    def corrupt(self, x0: PretrainBatch, t: torch.Tensor, *, generator=None) -> Corruption:
        m = x0.mol
        noise = remove_com(torch.randn(m.pos.shape, generator=generator, device=m.pos.device), m.mask) * self.sigma
        return Corruption(x_t=PretrainBatch(m.with_(pos=m.pos + noise), x0.properties), t=t, target=x0)

    def loss(self, prediction, corruption: Corruption) -> torch.Tensor:
        pos_hat, prop_hat = prediction
        x0: PretrainBatch = corruption.target
        m = x0.mol.mask.float()
        coord = (((pos_hat - x0.mol.pos) ** 2).sum(-1) * m).sum(1) / m.sum(1).clamp_min(1.0)
        return coord / self.sigma**2 + ((prop_hat - x0.properties) ** 2).mean(1)


class _PretrainDenoiser(nn.Module):
    def __init__(self, encoder: Encoder3D) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x_t: PretrainBatch, t, cond=None, *, capture=()) -> DenoiserOutput:
        _, pos, props = self.encoder(x_t.mol)
        return DenoiserOutput((pos, props))


def pretrain_encoder3d(dataset: QM9Dataset, steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                       device: str = "cpu", progress: bool = True) -> tuple[Encoder3D, dict]:
    """Coordinate denoising + standardised property regression on ``dataset`` with reed-core's Trainer."""
    from .qm9 import load_raw

    raw = load_raw(progress=progress)["properties"][dataset.ids]
    props = torch.from_numpy(((raw - raw.mean(0)) / (raw.std(0) + 1e-8)).astype(np.float32))
    torch.manual_seed(seed)
    enc = Encoder3D()
    data = StepData(StepSampler(len(dataset), batch_size, seed=seed),
                    lambda pos: Batch(x0=PretrainBatch(dataset.collate(pos), props[pos])))
    cfg = TrainConfig(max_steps=steps, lr=lr, seed=seed, progress=progress, log_every=max(1, steps // 20))
    trainer = Trainer(_PretrainDenoiser(enc), REEDObjective(EncoderPretraining()), data, cfg, None, device=device)
    start = time.perf_counter()
    history = trainer.fit(resume=False)
    info = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "sigma": PRETRAIN_SIGMA,
            "seconds": time.perf_counter() - start, "first_loss": history[0]["loss"],
            "final_loss": sum(h["loss"] for h in history[-50:]) / len(history[-50:]), "config": asdict(ENCODER3D_CONFIG)}
    return enc.cpu(), info


def fit_graph2d_teacher(dataset: QM9Dataset, sample: int = 5000, seed: int = 0) -> Graph2DTeacher:
    """A Graph2DTeacher standardised with statistics of ``sample`` training molecules."""
    rng = np.random.default_rng(seed)
    pos = rng.choice(len(dataset), size=min(sample, len(dataset)), replace=False)
    lookup = getattr(dataset, "graph2d", None)
    if lookup is not None:
        raw = lookup(dataset.ids[pos])
    else:
        raw = np.concatenate([_batch_graph2d(dataset.collate(pos[i:i + 512])) for i in range(0, len(pos), 512)])
    return Graph2DTeacher(raw.mean(0), raw.std(0), lookup)


def save_encoder3d(enc: Encoder3D, info: dict, path: str | os.PathLike) -> None:
    from reed_core import save_weights
    from reed_core.io import atomic_write

    path = save_weights(path, enc.state_dict())
    atomic_write(path.with_suffix(".json"), json.dumps(info, indent=2))


