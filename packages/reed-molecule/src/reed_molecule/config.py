"""Denoiser sizes (no torch import: the CLI's parser and ``--dry-run`` read them)."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLER_STEPS = 100  # the sampler's default step count (README: the cheapest that loses nothing measurable on the default grid)
SAMPLER_SPACING = 2.0  # the time grid t_i = (1 - i / steps) ** spacing (sampler.sampler_times; README: 2 beat uniform on 2 seeds)
SELECT_ON = ("valid_loss", "mol_stable", "atom_stable")  # what a run's best weights are chosen by (lowest loss, highest %)
SAMPLER_NOISE_SCALE = 1.0  # factor on the coordinates' ancestral-step noise (process.MolecularDiffusion.step; 1: exact)
SAMPLER_POSTERIORS = ("exact", "proportional")  # categorical reverse step (process.MolecularDiffusion.posterior_probs)
SAMPLER_POSTERIOR = "exact"  # the default; "proportional" reproduces the samples of earlier versions


@dataclass(frozen=True)
class ModelConfig:
    layers: int = 4
    scalars: int = 64
    vectors: int = 16
    edges: int = 16
    heads: int = 4
    rbf: int = 32
    rbf_max: float = 10.0

    def __post_init__(self) -> None:
        if self.layers < 1 or self.scalars < 1 or self.vectors < 1 or self.edges < 1:
            raise ValueError(f"layers/scalars/vectors/edges must be >= 1, got {self}")
        if self.scalars % self.heads:
            raise ValueError(f"scalars ({self.scalars}) must be divisible by heads ({self.heads})")


MODEL_PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(layers=12, scalars=256, vectors=256, edges=128, heads=8),  # EQGAT-diff size
    "small": ModelConfig(layers=6, scalars=128, vectors=32, edges=32, heads=4),
    "tiny": ModelConfig(layers=4, scalars=64, vectors=16, edges=16, heads=4),
}


__all__ = ["MODEL_PRESETS", "SELECT_ON", "ModelConfig"]
