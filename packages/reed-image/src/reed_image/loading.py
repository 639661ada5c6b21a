"""Trained SiT models from checkpoint directories (the shipped one by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from reed_core import AlignmentSpec, Interpolant, ProjectorBank
from reed_core.checkpoint import PROJ_FILE, CheckpointError, build_from_config, load_config, load_weights

from .model import SiT, SiTConfig

__all__ = ["LoadedModel", "default_checkpoint", "load_model"]

DOMAIN = "image"


def default_checkpoint() -> Path:
    """The small REED model trained on the embedded MNIST 5k set that ships inside the package."""
    return Path(str(resources.files("reed_image") / "weights" / "reed_mnist5k"))


@dataclass(frozen=True)
class LoadedModel:
    model: SiT
    process: Interpolant
    class_names: tuple[str, ...]
    kind: str
    hybrid: tuple[AlignmentSpec, ...] = ()  # latents a variational-hybrid model is conditioned on
    projectors: ProjectorBank | None = None
    vae: Any = None  # reed_image.vae.VAE of a latent-space model
    pixels: tuple[int, int] | None = None  # (channels, size) of the images

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler output -> images (B, C, H, W) in [-1, 1] (decoded by the VAE on the latent path)."""
        if self.vae is None:
            return x
        return self.vae.decode(x.to(next(self.vae.parameters()).device), channels=self.pixels[0] if self.pixels else 3)


def load_model(path: str | os.PathLike, which: str = "ema", device: str = "cpu",
               vae: str | os.PathLike | None = None) -> LoadedModel:
    """A trained SiT (``ema`` or ``model`` weights, eval mode) with its interpolant and class names; for a
    variational-hybrid model also its hybrid latents and trained projectors (for ``hybrid_latents``); for a
    latent-space model its VAE (from ``vae``, else the directory it was trained with)."""
    path = Path(path)
    mc = load_config(path, DOMAIN)["model"]
    model = SiT(build_from_config(path, SiTConfig, mc["model"]))
    load_weights(path, model, which)
    codec = None
    if vae is not None or mc.get("vae"):
        from .vae import LatentInterpolant, load_vae

        source = Path(vae or mc["vae"])
        if not source.is_dir():
            raise FileNotFoundError(f"{path}: a latent-space model; its VAE {source} is not there (give --vae DIR)")
        codec = load_vae(source, device)
        process = build_from_config(path, LatentInterpolant, mc.get("process", {}))
    else:
        process = build_from_config(path, Interpolant, mc.get("process", {}))
    names = tuple(mc.get("class_names") or (str(c) for c in range(model.cfg.num_classes)))
    hybrid, projectors = (), None
    if model.cfg.latent_dims:
        if not (path / PROJ_FILE).is_file():
            raise CheckpointError(f"{path}: a hybrid model without {PROJ_FILE}")
        from safetensors.torch import load_file

        projectors = ProjectorBank.from_state_dict(load_file(str(path / PROJ_FILE))).to(device).eval()
        latents = mc.get("latents", {})
        hybrid = tuple(AlignmentSpec(n, latents[n]["layer"], latents[n]["granularity"], condition=True)
                       for n in model.cfg.latent_dims)
    return LoadedModel(model.to(device).eval(), process, names, mc.get("kind", "image"), hybrid, projectors, codec,
                       tuple(mc["pixels"]) if mc.get("pixels") else None)
