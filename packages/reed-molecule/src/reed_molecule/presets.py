"""The molecule domain on the REED seam: ``MoleculeDomain`` (the protocol implementation over a QM9 split) and
``PRESET`` (the paper's molecule configuration with this package's teachers).

Paper (EQGAT-diff + REED): projection coefficient 0.2; the 2-D graph latent pooled after layer 5 of 12; the
generative loss ramped 0 -> 1 over the first 30 of 200 epochs (15 %). The 3-D latent (per atom, layer 8 of 12)
is the pretrained in-project encoder; REPA-style aligns it alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from reed_core import (
    Curriculum,
    DomainPreset,
    LatentSpec,
    Trainer,
    Validation,
    build_trainer,
    run_train_config,
)

from .config import MODEL_PRESETS, SAMPLER_SPACING, SAMPLER_STEPS, SELECT_ON, ModelConfig
from .data import MoleculeBatch, QM9Dataset
from .loading import DOMAIN
from .model import EQGATDenoiser
from .process import MolecularDiffusion
from .teachers import Encoder3DTeacher, fit_graph2d_teacher

__all__ = ["PRESET", "SELECT_ON", "VAL_TIMES", "MoleculeDomain", "capture_layer", "molecule_trainer", "sample_counts",
           "sampled_stability", "validation", "validation_batches", "validation_loss", "validation_molecules"]

VAL_TIMES = 8  # the validation loss's time grid: t = (k + 0.5) / 8, every molecule at every t


def capture_layer(model: ModelConfig, layer: str | float) -> str:
    """The capture name of ``layer``: a name ``layerK`` or a relative depth r in (0, 1] -> round(r * layers)."""
    n = model.layers
    if isinstance(layer, str):
        if layer not in {f"layer{k}" for k in range(1, n + 1)}:
            raise ValueError(f"unknown layer {layer!r}; the denoiser has layer1..layer{n}")
        return layer
    if not 0.0 < layer <= 1.0:
        raise ValueError(f"relative depth must be in (0, 1], got {layer}")
    return f"layer{max(1, min(n, round(layer * n)))}"


class MoleculeDomain:
    """Denoiser = ``EQGATDenoiser(model)``; process = ``MolecularDiffusion`` with the split's marginals (training
    times t = u^``time_power``); a latent at relative depth r is captured after layer round(r * layers) (1-based);
    its width is the scalar width."""

    name = DOMAIN

    def __init__(self, data: QM9Dataset, model: ModelConfig | str = "tiny", *, time_power: float = 1.0) -> None:
        if isinstance(model, str) and model not in MODEL_PRESETS:
            raise ValueError(f"model preset must be one of {sorted(MODEL_PRESETS)}, got {model!r}")
        self.data, self.model = data, MODEL_PRESETS[model] if isinstance(model, str) else model
        self.time_power = time_power
        self._process: MolecularDiffusion | None = None

    def build_model(self, latent_dims) -> EQGATDenoiser:
        if latent_dims:
            raise ValueError("the molecule denoiser takes no hybrid latents (LatentSpec.condition)")
        return EQGATDenoiser(self.model)

    def build_process(self) -> MolecularDiffusion:
        if self._process is None:
            self._process = MolecularDiffusion.from_marginals(self.data.marginals(), time_power=self.time_power)
        return self._process

    def capture(self, layer: str | float) -> tuple[str, int]:
        return capture_layer(self.model, layer), self.model.scalars

    def model_config(self) -> dict[str, Any]:
        p = self.build_process()
        return {"model": asdict(self.model),
                "process": {"atom_prior": p.atom_prior, "charge_prior": p.charge_prior, "bond_prior": p.bond_prior},
                "atom_histogram": self.data.atom_count_histogram().tolist()}


PRESET = DomainPreset(
    latents=(
        LatentSpec("graph2d", lambda d: fit_graph2d_teacher(d.data), layer=5 / 12, cached=True),
        LatentSpec("encoder3d", lambda d: Encoder3DTeacher(), layer=8 / 12, cached=True),
    ),
    curriculum=Curriculum(warmup=0.15),
    repa_latents=("encoder3d",),
    align_coefficient=0.2,
)


def molecule_trainer(method: str, data: QM9Dataset, out_dir: str | os.PathLike | None, *, model: str | ModelConfig = "tiny",
                     steps: int = 1000, batch_size: int = 32, lr: float = 5e-4, lr_decay: str = "constant",
                     lr_final: float = 0.0, seed: int = 0, time_power: float = 1.0,
                     align_coefficient: float | None = None, ema_decay: float = 0.999, preset: DomainPreset = PRESET,
                     cache: str | os.PathLike | None = None, progress: bool = True, device: str | None = None,
                     precision: str = "fp32", grad_accum: int = 1, weight_decay: float = 0.0) -> Trainer:
    """``build_trainer`` with this domain's defaults (the CLI and the benchmark call this); ``precision``: the
    training step's autocast dtype (``TrainConfig.precision``); ``grad_accum``: micro-batches that ``batch_size`` is
    split into (``TrainConfig.grad_accum``); ``weight_decay``: AdamW's (``TrainConfig.weight_decay``)."""
    from .qm9 import cache_dir

    if align_coefficient is not None:
        preset = replace(preset, align_coefficient=align_coefficient)
    run = {"method": method, "model": model if isinstance(model, str) else asdict(model), "steps": steps,
           "batch_size": batch_size, "lr": lr, "lr_decay": lr_decay, "lr_final": lr_final, "seed": seed,
           "time_power": time_power, "align_coefficient": preset.align_coefficient, "ema_decay": ema_decay,
           "train_molecules": len(data), "precision": precision, "grad_accum": grad_accum, "weight_decay": weight_decay}
    train = run_train_config(steps, lr=lr, seed=seed, ema_decay=ema_decay, progress=progress, lr_decay=lr_decay,
                             lr_final=lr_final, precision=precision, grad_accum=grad_accum, weight_decay=weight_decay)
    return build_trainer(MoleculeDomain(data, model, time_power=time_power), preset, method, train, batch_size, out_dir,
                         cache_dir=cache_dir(cache), device=device, progress=progress, run=run)


def validation_molecules(cache, n: int, batch: int, seed: int, pack=None) -> list[MoleculeBatch]:
    """``n`` validation molecules chosen by ``seed`` (all if fewer), in batches of ``batch``."""
    ds = QM9Dataset("valid", cache, progress=False, pack=pack)
    rows = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    return [ds.collate(rows[lo:lo + batch]) for lo in range(0, len(rows), batch)]


def validation_batches(cache, n: int, batch: int, seed: int, pack=None) -> list:
    """Fixed (x0, t, noise seed) triples: ``n`` validation molecules, each at every time of the grid."""
    return [(x0, torch.full((x0.batch_size,), (k + 0.5) / VAL_TIMES), 1000 * batch * i + k)
            for i, x0 in enumerate(validation_molecules(cache, n, batch, seed, pack)) for k in range(VAL_TIMES)]


@torch.no_grad()
def validation_loss(model, process, batches: list, device: str) -> float:
    """The training objective (process loss, per molecule, mean) of ``model`` on ``batches``; CPU generators make
    the noise identical on every device."""
    total, count = 0.0, 0
    for x0, t, noise_seed in batches:
        c = process.corrupt(x0, t, generator=torch.Generator().manual_seed(noise_seed))
        x_t = c.x_t.to(device)
        c = replace(c, x_t=x_t, t=t.to(device), target=c.target.to(device))
        loss = process.loss(model(x_t, c.t, None).prediction, c)
        total, count = total + float(loss.sum()), count + len(loss)
    return total / count


def sample_counts(histogram, n: int, seed: int) -> torch.Tensor:
    """``n`` atom counts drawn from the training ``histogram`` by ``seed``, sorted (batches of similar sizes)."""
    from .sampler import size_distribution

    p = size_distribution(histogram)
    return torch.as_tensor(np.sort(np.random.default_rng(seed).choice(len(p), size=n, p=p)))


@torch.no_grad()
def sampled_stability(model, process: MolecularDiffusion, counts: torch.Tensor, *, num_steps: int = SAMPLER_STEPS,
                      spacing: float = SAMPLER_SPACING, seed: int = 0, batch: int = 250, device: str = "cpu"
                      ) -> dict[str, float | None]:
    """EDM's atom and molecule stability (%) of molecules sampled by ``model`` with the given atom ``counts``, the
    sampler's noise from ``seed`` (the same molecules' noise at every call, so two checkpoints are compared on common
    random numbers); distance-based bond orders only (``metrics.edm_stability``): torch and numpy, no RDKit."""
    from .metrics import edm_stability
    from .sampler import sample

    g = torch.Generator(device=device).manual_seed(seed)
    parts = [sample(model, process, counts[lo:lo + batch].to(device), num_steps=num_steps, generator=g,
                    spacing=spacing).numpy() for lo in range(0, len(counts), batch)]  # each batch as wide as it needs
    width = int(counts.max())

    def padded(k: str) -> np.ndarray:
        return np.concatenate([np.pad(q[k], [(0, 0), (0, width - q[k].shape[1])] + [(0, 0)] * (q[k].ndim - 2))
                               for q in parts])

    atom, mol, _ = edm_stability(padded("pos"), padded("atoms"), padded("mask"))
    return {"atom_stable": atom, "mol_stable": mol}


def validation(trainer: Trainer, every: int, *, molecules: int = 512, cache=None, pack=None, seed: int = 0,
               samples: int = 0, sample_steps: int = SAMPLER_STEPS, select: str = "valid_loss",
               histogram=None) -> Validation:
    """Score ``trainer``'s EMA weights every ``every`` steps on the validation loss (the training objective on a
    fixed ``molecules`` validation molecules x ``VAL_TIMES`` times with fixed noise: no sampling, no RDKit, so it
    runs where only torch is) and, with ``samples`` > 0, on the EDM atom and molecule stability of that many
    molecules sampled in ``sample_steps`` steps (``sampled_stability``: atom counts drawn once from ``histogram``,
    default the trainer's training histogram, and the same noise at every evaluation). The best weights are kept by
    ``select`` (one of ``SELECT_ON``: the lowest loss, or the highest stability, which needs ``samples``)."""
    if select not in SELECT_ON:
        raise ValueError(f"select must be one of {SELECT_ON}, got {select!r}")
    if samples < 0 or (select != "valid_loss" and samples < 1):
        raise ValueError(f"selecting on {select} needs sampled molecules (samples >= 1), got samples={samples}")
    batches = validation_batches(cache, molecules, 256, seed, pack=pack)
    process, device = trainer.objective.process, str(trainer.device)
    counts = None
    if samples:
        hist = trainer.model_config["atom_histogram"] if histogram is None else histogram
        counts = sample_counts(hist, samples, seed)

    def evaluate(model) -> dict[str, float | None]:
        out = {"valid_loss": validation_loss(model, process, batches, device)}
        if counts is not None:
            out |= sampled_stability(model, process, counts, num_steps=sample_steps, seed=seed, device=device)
        return out

    return Validation(evaluate, every, best=select, mode="min" if select == "valid_loss" else "max")
