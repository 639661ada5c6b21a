"""Trained molecule models from checkpoint directories (the shipped one by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reed_core.checkpoint import build_from_config, load_config, load_weights

from .model import EQGATDenoiser, ModelConfig
from .process import MolecularDiffusion

DOMAIN = "molecule"


@dataclass
class LoadedModel:
    model: EQGATDenoiser
    process: MolecularDiffusion
    atom_histogram: np.ndarray
    config: dict[str, Any]


def default_checkpoint() -> Path:
    from importlib import resources

    return Path(str(resources.files("reed_molecule") / "weights" / "reed_qm9"))


def model_config(path: str | os.PathLike, stored: dict[str, Any] | None = None) -> ModelConfig:
    """The denoiser's configuration stored in checkpoint ``path`` (a CheckpointError if it is not a molecule one);
    ``stored``: its ``config.json["model"]`` when the caller has read it already."""
    cfg = (stored if stored is not None else load_config(path, DOMAIN)["model"])["model"]
    mc = {k: v for k, v in cfg.items() if k != "latent_dims"}  # older configs carry an empty latent_dims
    return build_from_config(path, ModelConfig, mc)


def load_model(path: str | os.PathLike, which: str = "ema", device: str = "cpu") -> LoadedModel:
    """A trained denoiser (``ema`` or ``model`` weights) with its process and atom-count histogram."""
    path = Path(path)
    cfg = load_config(path, DOMAIN)["model"]
    model = EQGATDenoiser(model_config(path, cfg))
    load_weights(path, model, which)
    p = cfg["process"]
    process = MolecularDiffusion(tuple(p["atom_prior"]), tuple(p["charge_prior"]), tuple(p["bond_prior"]))
    return LoadedModel(model.to(device).eval(), process, np.asarray(cfg["atom_histogram"], float), cfg)
