"""Vanilla, REPA-style and REED training for inverse folding through one code path, plus evaluation."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from reed_core import (
    Batch,
    StepData,
    StepSampler,
    Trainer,
    reed_curriculum,
)
from reed_core.checkpoint import load_config, load_weights
from reed_core.recipes import METHODS, LatentPlan, method_objective, run_train_config

from .constants import MASK_INDEX, X_INDEX
from .data import ChainSet, ProteinBatch
from .model import PROTEIN_PRESETS, ProteinDenoiser, ProteinModelConfig
from .process import MaskedDiffusion
from .teachers import BackboneTeacher, ChainFeatureCache, PairGeometryTeacher, StructureEncoderTeacher

Method = Literal["vanilla", "repa", "reed"]


@dataclass(frozen=True)
class ProteinRunConfig:
    method: Method = "reed"
    preset: str = "tiny"
    steps: int = 1000
    batch_size: int = 8
    max_length: int = 256
    lr: float = 1e-3
    seed: int = 0
    loss_type: str = "elbo"
    align_scale: float = 0.2
    ema_decay: float = 0.999
    projector_hidden: int = 256
    drop_antibodies: bool = False
    cache_structure_features: bool = False  # precompute the structure teacher on whole chains (see ChainFeatureCache)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.preset not in PROTEIN_PRESETS:
            raise ValueError(f"preset must be one of {sorted(PROTEIN_PRESETS)}, got {self.preset!r}")

    @property
    def model(self) -> ProteinModelConfig:
        return PROTEIN_PRESETS[self.preset]

    def layers(self) -> dict[str, str]:
        m = self.model
        return {"single": "dec1", "pair": f"edge{m.encoder_layers}", "structure": f"enc{m.encoder_layers}"}


def train_ids(chains: ChainSet, cfg: ProteinRunConfig) -> np.ndarray:
    ids = chains.split("train")
    if cfg.drop_antibodies:
        keep = chains.source_names[chains.source[ids]] != "sabdab_refinegnn"
        ids = ids[keep]
    return ids


def build_run(cfg: ProteinRunConfig, chains: ChainSet, out_dir: str | os.PathLike | None, progress: bool = True,
              device: str | None = None) -> Trainer:
    torch.manual_seed(cfg.seed)
    model = ProteinDenoiser(cfg.model)
    process = MaskedDiffusion(loss_type=cfg.loss_type)
    curriculum = reed_curriculum("protein", cfg.steps)
    layers = cfg.layers()
    names = {"vanilla": (), "repa": ("structure",), "reed": ("single", "pair", "structure")}[cfg.method]
    ids = train_ids(chains, cfg)
    plans, cache = [], None
    for name in names:
        teacher = {"single": BackboneTeacher, "pair": lambda: PairGeometryTeacher(cfg.model.k),
                   "structure": StructureEncoderTeacher}[name]()
        if name == "structure" and cfg.cache_structure_features:
            cache = ChainFeatureCache(teacher, chains, ids, device=device or "cpu", progress=progress)
        plans.append(LatentPlan(name, layers[name], teacher.granularity, teacher.dim,
                                reed_coefficient=curriculum.coefficients[name] / 0.2 * cfg.align_scale,
                                teacher=None if name == "structure" and cache is not None else teacher,
                                standardize=name != "structure"))
    objective = method_objective(cfg.method, process, plans, student_dim=cfg.model.hidden, curriculum=curriculum,
                                 repa_coefficient=cfg.align_scale, projector_hidden=cfg.projector_hidden)
    sampler = StepSampler(len(ids), cfg.batch_size, seed=cfg.seed, weights=chains.cluster_weights(ids).tolist())

    def collate(pos: np.ndarray) -> Batch:
        x = chains.batch(ids[pos], cfg.max_length, crop_seed=cfg.seed)
        return Batch(x0=x, representations={"structure": cache.representation(x)} if cache is not None else {})

    data = StepData(sampler, collate)
    train_cfg = run_train_config(cfg.steps, lr=cfg.lr, seed=cfg.seed, ema_decay=cfg.ema_decay, progress=progress,
                                 max_warmup=200)
    model_config = {"model": asdict(cfg.model), "process": {"loss_type": cfg.loss_type}, "run": asdict(cfg),
                    "latents": {p.name: {"layer": p.layer, "granularity": p.granularity} for p in plans}}
    return Trainer(model, objective, data, train_cfg, out_dir, model_config=model_config, device=device)


def load_model(path: str | os.PathLike, which: str = "ema", device: str = "cpu") -> ProteinDenoiser:
    path = Path(path)
    mc = load_config(path)["model"]["model"]
    model = ProteinDenoiser(ProteinModelConfig(**{**mc, "latent_dims": mc.get("latent_dims", {})}))
    load_weights(path, model, which)
    return model.to(device).eval()


def default_checkpoint() -> Path:
    from importlib import resources

    return Path(str(resources.files("reed_protein") / "weights" / "reed_inverse_folding"))


@torch.no_grad()
def design_batch(model: ProteinDenoiser, x: ProteinBatch, *, num_steps: int = 20, temperature: float = 0.1,
                 generator: torch.Generator | None = None, bias=None, omit=None, encoding=None):
    """Sample sequences for a batch of structures (encoder run once). Returns (tokens, per-token log-probs)."""
    model.eval()
    enc = encoding if encoding is not None else model.encode(x)
    return MaskedDiffusion().sample(lambda S, t: model.decode(enc, S).prediction, x, num_steps=num_steps,
                                    temperature=temperature, bias=bias, omit=omit, generator=generator)


@torch.no_grad()
def evaluate(model: ProteinDenoiser, chains: ChainSet, ids: np.ndarray, *, num_steps: int = 20,
             temperature: float = 0.1, batch_size: int = 16, seed: int = 0, device: str = "cpu",
             max_length: int | None = None) -> dict[str, float]:
    """Sequence recovery of sampled designs (mean over chains) and perplexity of the native sequence given the
    structure with every residue masked (one pass). Chains are batched by length (little padding)."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    ids = np.asarray(ids)[np.argsort(np.diff(chains.offsets)[ids], kind="stable")]
    recov, nll, count = [], 0.0, 0
    for lo in range(0, len(ids), batch_size):
        x = chains.batch(ids[lo:lo + batch_size], max_length).to(device)
        enc = model.encode(x)
        S, _ = design_batch(model, x, num_steps=num_steps, temperature=temperature, generator=g, encoding=enc)
        scored = x.design_mask & (x.S != X_INDEX)
        same = ((S == x.S) & scored).sum(1).float() / scored.sum(1).clamp_min(1)
        recov.extend(same.tolist())
        logits = model.decode(enc, torch.where(x.design_mask, torch.full_like(x.S, MASK_INDEX), x.S)).prediction
        ce = F.cross_entropy(logits.float().transpose(1, 2), x.S, reduction="none")
        nll += float((ce * scored).sum())
        count += int(scored.sum())
    return {"recovery": 100.0 * float(np.mean(recov)), "perplexity": math.exp(nll / max(count, 1)), "chains": len(ids)}


__all__ = ["METHODS", "ProteinRunConfig", "build_run", "default_checkpoint", "design_batch", "evaluate", "load_model"]
