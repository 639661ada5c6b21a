"""Vanilla, REPA-style and REED training of the molecule denoiser through one code path."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reed_core import (
    Batch,
    StepData,
    StepSampler,
    Trainer,
    reed_curriculum,
)
from reed_core.checkpoint import load_config, load_weights
from reed_core.recipes import METHODS, LatentPlan, method_objective, run_train_config

from .data import MAX_ATOMS, QM9Dataset
from .model import MODEL_PRESETS, EQGATDenoiser, ModelConfig
from .process import MolecularDiffusion
from .teachers import Encoder3DTeacher, TeacherCache, fit_graph2d_teacher

Method = Literal["vanilla", "repa", "reed"]


@dataclass(frozen=True)
class MoleculeRunConfig:
    """One training run. ``graph2d_layer``/``encoder3d_layer`` default to the paper's relative depths
    (pooled 2-D latent after layer 5 of 12, per-atom 3-D latent after layer 8 of 12)."""

    method: Method = "reed"
    preset: str = "tiny"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    seed: int = 0
    align_coefficient: float = 0.2
    graph2d_layer: int | None = None
    encoder3d_layer: int | None = None
    train_limit: int | None = None
    ema_decay: float = 0.999
    projector_hidden: int = 256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.preset not in MODEL_PRESETS:
            raise ValueError(f"preset must be one of {sorted(MODEL_PRESETS)}, got {self.preset!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")

    @property
    def model(self) -> ModelConfig:
        return MODEL_PRESETS[self.preset]

    def layer(self, which: str) -> int:
        n = self.model.layers
        explicit = {"graph2d": self.graph2d_layer, "encoder3d": self.encoder3d_layer}[which]
        if explicit is not None:
            if not 1 <= explicit <= n:
                raise ValueError(f"{which}_layer must be in 1..{n}, got {explicit}")
            return explicit
        rel = {"graph2d": 5 / 12, "encoder3d": 8 / 12}[which]
        return max(1, min(n, round(rel * n)))


def build_run(cfg: MoleculeRunConfig, dataset: QM9Dataset, out_dir: str | os.PathLike | None,
              cache: str | os.PathLike | None = None, progress: bool = True, device: str | None = None) -> Trainer:
    """The model, objective (with cached teacher features) and trainer for ``cfg``."""
    torch.manual_seed(cfg.seed)
    model = EQGATDenoiser(cfg.model)
    process = MolecularDiffusion.from_marginals(dataset.marginals())
    names = {"vanilla": (), "repa": ("encoder3d",), "reed": ("graph2d", "encoder3d")}[cfg.method]
    caches: dict[str, TeacherCache] = {}
    plans = []
    for name in names:
        teacher = fit_graph2d_teacher(dataset) if name == "graph2d" else Encoder3DTeacher()
        caches[name] = TeacherCache(teacher, dataset, cache, progress=progress)
        plans.append(LatentPlan(name, f"layer{cfg.layer(name)}", teacher.granularity, teacher.dim,
                                reed_coefficient=cfg.align_coefficient))  # features come from the cache
    objective = method_objective(cfg.method, process, plans, student_dim=cfg.model.scalars,
                                 curriculum=reed_curriculum("molecule", cfg.steps),
                                 repa_coefficient=cfg.align_coefficient, projector_hidden=cfg.projector_hidden)

    def collate(positions: np.ndarray) -> Batch:
        reps = {name: c.representation(positions, MAX_ATOMS) for name, c in caches.items()}
        return Batch(x0=dataset.collate(positions), representations=reps)

    data = StepData(StepSampler(len(dataset), cfg.batch_size, seed=cfg.seed), collate)
    train_cfg = run_train_config(cfg.steps, lr=cfg.lr, seed=cfg.seed, ema_decay=cfg.ema_decay, progress=progress)
    model_config = {
        "model": asdict(cfg.model),
        "process": {"atom_prior": process.atom_prior, "charge_prior": process.charge_prior,
                    "bond_prior": process.bond_prior},
        "run": asdict(cfg),
        "atom_histogram": dataset.atom_count_histogram().tolist(),
        "latents": {p.name: {"layer": p.layer, "granularity": p.granularity, "dim": p.dim} for p in plans},
    }
    return Trainer(model, objective, data, train_cfg, out_dir, model_config=model_config, device=device)


@dataclass
class LoadedModel:
    model: EQGATDenoiser
    process: MolecularDiffusion
    atom_histogram: np.ndarray
    config: dict[str, Any]


def load_model(path: str | os.PathLike, which: str = "ema", device: str = "cpu") -> LoadedModel:
    """A trained denoiser from a checkpoint directory (``ema`` or ``model`` weights)."""
    path = Path(path)
    cfg = load_config(path)["model"]
    mc = cfg["model"]
    model = EQGATDenoiser(ModelConfig(**{**mc, "latent_dims": mc.get("latent_dims", {})}))
    load_weights(path, model, which)
    p = cfg["process"]
    process = MolecularDiffusion(tuple(p["atom_prior"]), tuple(p["charge_prior"]), tuple(p["bond_prior"]))
    return LoadedModel(model.to(device).eval(), process, np.asarray(cfg["atom_histogram"], float), cfg)


def default_checkpoint() -> Path:
    from importlib import resources

    return Path(str(resources.files("reed_molecule") / "weights" / "reed_tiny"))


def sample_molecules(loaded: LoadedModel, n: int, *, num_steps: int = 100, seed: int = 0, batch_size: int = 100,
                     progress: bool = False, device: str = "cpu"):
    """Sample ``n`` molecules; atom counts drawn from the training histogram. Returns a dict of numpy arrays
    (pos, atoms, charges (formal), bonds, mask)."""
    from tqdm.auto import tqdm

    from .constants import CHARGES

    g = torch.Generator(device=device).manual_seed(seed)
    hist = torch.as_tensor(loaded.atom_histogram / loaded.atom_histogram.sum(), dtype=torch.float)
    out = {k: [] for k in ("pos", "atoms", "charges", "bonds", "mask")}
    for lo in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress):
        b = min(batch_size, n - lo)
        counts = torch.multinomial(hist, b, replacement=True, generator=torch.Generator().manual_seed(seed + lo)).to(device)
        x = loaded.process.sample(loaded.model, counts, num_steps=num_steps, generator=g, max_atoms=MAX_ATOMS)
        a = x.numpy()
        out["pos"].append(a["pos"])
        out["atoms"].append(a["atoms"])
        out["charges"].append(np.asarray(CHARGES)[a["charges"]] * a["mask"])
        out["bonds"].append(a["bonds"])
        out["mask"].append(a["mask"])
    return {k: np.concatenate(v) for k, v in out.items()}


__all__ = ["METHODS", "LoadedModel", "MoleculeRunConfig", "build_run",
           "default_checkpoint", "load_model", "sample_molecules"]
