"""The image domain on the REED seam: ``ImageDomain`` (SiT + an interpolant over an image set) and the paper's
presets.

Paper (SiT + REED): projection coefficient 0.5; DINOv2 patch tokens (coefficient 1.0) at depth 8 of 28 and the
VLM image + caption embedding (0.5) at depth 16 of 28; the generative loss warms up over the first 50k of 1M steps
(5 %), alignment held constant. Here the patch-token teacher is EfficientNet-Lite0 with real ImageNet weights
(``"image"``; DINOv2 weights are not reachable offline: ``DINOv2Teacher`` loads them from a local directory) and
the pooled teacher is the MiniLM embedding of a caption written from the image fused with EfficientNet's pooled
features (``"caption"``). REPA-style aligns ``"image"`` alone, without the curriculum. Both teachers are cached
(computed once per training image).
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from reed_core import (
    Curriculum,
    DomainPreset,
    Interpolant,
    LatentSpec,
    Trainer,
    Validation,
    build_trainer,
    run_train_config,
)

from .data import ImageSet, ImageTrainingData, to_tensor
from .model import SiT, SiTConfig, sit_config

__all__ = ["DOMAIN", "PRESET", "PRESETS", "ImageDomain", "image_trainer", "trainer_samples", "validation"]

DOMAIN = "image"


class ImageDomain:
    """Denoiser = ``SiT(model)``, process = ``Interpolant(...)``; a latent's layer is ``blockK`` (1-based) or a
    relative depth r in (0, 1] (block round(r * depth), at least 1)."""

    name = DOMAIN

    def __init__(self, data: ImageTrainingData, model: SiTConfig, process: Interpolant | None = None,
                 vae: str | None = None) -> None:
        self.data, self.model, self.process, self.vae = data, model, process or Interpolant(), vae

    def build_model(self, latent_dims) -> SiT:
        self.model = replace(self.model, latent_dims=dict(latent_dims))  # model_config describes what was built
        return SiT(self.model)

    def build_process(self) -> Interpolant:
        return self.process

    def capture(self, layer: str | float) -> tuple[str, int]:
        depth = self.model.depth
        if isinstance(layer, str):
            if not (layer.startswith("block") and layer[5:].isdigit() and 1 <= int(layer[5:]) <= depth):
                raise ValueError(f"unknown SiT layer {layer!r}; use block1..block{depth} or a relative depth")
            return layer, self.model.hidden
        if not 0.0 < layer <= 1.0:
            raise ValueError(f"relative depth must be in (0, 1], got {layer}")
        return f"block{max(1, round(layer * depth))}", self.model.hidden

    def model_config(self) -> dict[str, Any]:
        _, channels, size, _ = self.data.x.shape
        return {"model": asdict(self.model), "process": asdict(self.process), "vae": self.vae,
                "pixels": [channels, size], "class_names": list(self.data.set.class_names), "kind": self.data.set.kind}


def _image_teacher(d: ImageDomain):
    from .teachers import EfficientNetTeacher

    return EfficientNetTeacher(grid=d.model.grid)


def _caption_teacher(d: ImageDomain):
    from .teachers import CaptionTeacher

    return CaptionTeacher(d.data.set.class_names, d.data.set.kind, fuse_image=True)


def paper_preset(cached: bool = True, hybrid: bool = False) -> DomainPreset:
    """The paper's two latents; ``hybrid``: both also condition the denoiser (the variational hybrid)."""
    return DomainPreset(
        latents=(LatentSpec("image", _image_teacher, layer=8 / 28, coefficient=1.0, cached=cached, condition=hybrid),
                 LatentSpec("caption", _caption_teacher, layer=16 / 28, coefficient=0.5, cached=cached,
                            condition=hybrid)),
        curriculum=Curriculum(warmup=0.05), repa_latents=("image",), align_coefficient=0.5)


PRESETS = {"paper": paper_preset(), "hybrid": paper_preset(hybrid=True)}
PRESET = PRESETS["paper"]


def image_trainer(method: str, train_set: ImageSet, out_dir: str | os.PathLike | None, *, model: str = "tiny",
                  steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, lr_decay: str = "constant",
                  lr_final: float = 0.0, seed: int = 0, path: str = "linear",
                  time_sampling: str = "uniform", ema_decay: float = 0.999, preset: DomainPreset | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True, device: str | None = None,
                  precision: str = "fp32", vae: str | os.PathLike | None = None, grad_accum: int = 1,
                  weight_decay: float = 0.0) -> Trainer:
    """``build_trainer`` with this domain's defaults (the CLI and the benchmark call this). ``vae``: a local
    diffusers AutoencoderKL directory: SiT then trains on its latents (``reed_image.vae``); ``grad_accum``:
    micro-batches that ``batch_size`` is split into (``TrainConfig.grad_accum``); ``weight_decay``: AdamW's
    (``TrainConfig.weight_decay``)."""
    preset = preset or PRESET
    _, channels, size, _ = to_tensor(train_set.images[:1]).shape  # the size training sees (28 px padded to 32)
    codec, process = None, Interpolant(path=path, time_sampling=time_sampling)
    if vae is not None:
        from .vae import load_vae

        if on_the_fly := [s.name for s in preset.for_method(method) if not s.cached]:
            raise ValueError(f"the latent path needs cached teachers (they see pixels); not cached: {on_the_fly}")
        codec = load_vae(vae, device or "cpu")
        size, channels = codec.latent_size(size), codec.channels
        process = codec.process(path=path, time_sampling=time_sampling)
    cfg = sit_config(model, image_size=size, in_channels=channels, num_classes=train_set.num_classes)
    data = ImageTrainingData(train_set, tokens=cfg.grid * cfg.grid)
    if codec is not None:  # x0 becomes the posterior moments of the pixels data already holds
        data.latents = codec.moments(data.x, progress=progress)
    run = {"method": method, "model": model, "steps": steps, "batch_size": batch_size, "lr": lr, "lr_decay": lr_decay,
           "lr_final": lr_final, "seed": seed,
           "data": train_set.source, "ema_decay": ema_decay, "grad_accum": grad_accum, "weight_decay": weight_decay}
    train = run_train_config(steps, lr=lr, seed=seed, ema_decay=ema_decay, progress=progress, max_warmup=200,
                             precision=precision, lr_decay=lr_decay, lr_final=lr_final, grad_accum=grad_accum,
                             weight_decay=weight_decay)
    domain = ImageDomain(data, cfg, process, vae=None if vae is None else str(Path(vae).resolve()))
    return build_trainer(domain, preset, method, train, batch_size, out_dir,
                         cache_dir=cache_dir, device=device, progress=progress, run=run)


@torch.no_grad()
def trainer_samples(trainer: Trainer, model: SiT, num: int, *, steps: int = 25, cfg: float = 1.0, seed: int = 0,
                    decode=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` class-balanced samples (labels ``i % classes``) of ``model`` (e.g. ``trainer.ema_model()``) with
    the Euler ODE from the same noise for a given ``seed``; a variational-hybrid model is sampled on its own
    projected z. ``decode`` maps latent-path samples to pixels. Returns (images (N, C, H, W), labels) on the
    trainer's device."""
    from .sampler import hybrid_latents, sample

    labels = torch.arange(num, device=trainer.device) % model.cfg.num_classes
    hybrid = [s for s in trainer.objective.specs if s.condition]
    lat = hybrid_latents(model, hybrid, trainer.objective.projectors, labels, "self") if hybrid else None
    x = sample(model, trainer.objective.process, labels, shape=(model.cfg.in_channels, model.cfg.image_size,
                                                                 model.cfg.image_size),
               num_steps=steps, method="euler", cfg=cfg, generator=torch.Generator(trainer.device).manual_seed(seed),
               latents=lat)
    return (decode(x) if decode is not None else x), labels


def validation(trainer: Trainer, every: int, held: ImageSet, *, samples: int = 500, steps: int = 25,
               cfg: float = 1.0, seed: int = 0, classifier=None) -> Validation:
    """Score ``trainer``'s EMA weights every ``every`` steps: ``samples`` class-balanced samples (``trainer_samples``:
    Euler ODE, ``steps``, the same noise every time) against the ``held`` images on ``classifier``'s features
    (default: the one shipped for the embedded MNIST 5k): FID_classifier (the lowest is kept), precision, recall,
    class accuracy, as ``reed-image eval`` computes them."""
    from .metrics import default_classifier, sample_metrics

    if samples < 10:
        raise ValueError(f"validation needs >= 10 samples for FID / precision / recall, got {samples}")
    classifier = classifier or default_classifier()
    real = to_tensor(held.images)
    vae, decode = trainer.model_config.get("vae"), None
    if vae is not None:  # latent path: decode the samples to pixels as ``reed-image sample`` does
        from .vae import load_vae

        codec, channels = load_vae(vae, str(trainer.device)), trainer.model_config["pixels"][0]
        decode = lambda z: codec.decode(z, channels=channels)  # noqa: E731
    if real.shape[1] != classifier.in_channels:
        raise ValueError(f"the classifier takes {classifier.in_channels}-channel images, the held-out images have "
                         f"{real.shape[1]}")

    def score(model: SiT) -> dict[str, float]:
        x, labels = trainer_samples(trainer, model, samples, steps=steps, cfg=cfg, seed=seed, decode=decode)
        return sample_metrics(x.float().cpu(), labels.cpu(), real, classifier)

    return Validation(score, every, best="fid_classifier", mode="min")
