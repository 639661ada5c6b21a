"""Trained inverse-folding models from checkpoint directories (the shipped one by default)."""

from __future__ import annotations

import os
from pathlib import Path

from reed_core.checkpoint import build_from_config, load_config, load_weights

from .model import ProteinDenoiser, ProteinModelConfig

DOMAIN = "protein"


def default_checkpoint() -> Path:
    from importlib import resources

    return Path(str(resources.files("reed_protein") / "weights" / "reed_inverse_folding"))


def load_model(path: str | os.PathLike, which: str = "ema", device: str = "cpu") -> ProteinDenoiser:
    """A trained denoiser (``ema`` or ``model`` weights), in eval mode."""
    path = Path(path)
    mc = load_config(path, DOMAIN)["model"]["model"]
    model = ProteinDenoiser(build_from_config(path, ProteinModelConfig, mc))
    load_weights(path, model, which)
    return model.to(device).eval()
