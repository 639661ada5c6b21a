"""Samplers (plain functions, explicit generators): ancestral sampling of molecules from a trained denoiser."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .config import SAMPLER_NOISE_SCALE, SAMPLER_POSTERIOR, SAMPLER_SPACING, SAMPLER_STEPS
from .constants import CHARGES
from .data import MAX_ATOMS, MoleculeBatch
from .loading import LoadedModel
from .process import MolecularDiffusion, check_noise_scale, check_time_power


def sampler_times(num_steps: int, spacing: float = SAMPLER_SPACING, device=None) -> torch.Tensor:
    """The ``num_steps + 1`` times of the sampler, 1 down to 0: t_i = (1 - i / num_steps) ** spacing. ``spacing``
    1 is a uniform grid; > 1 spends more of the steps at low noise (2: half of them below t = 0.25), where the
    coordinates must become precise to a few hundredths of an angstrom for the bonds to come out right."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    check_time_power(spacing, "spacing")
    u = torch.linspace(1.0, 0.0, num_steps + 1, device=device)
    return u if spacing == 1 else u.pow(spacing)


@torch.no_grad()
def sample(model: nn.Module, process: MolecularDiffusion, num_atoms: torch.Tensor, *, num_steps: int = SAMPLER_STEPS,
           generator: torch.Generator | None = None, max_atoms: int | None = None,
           spacing: float = SAMPLER_SPACING, noise_scale: float = SAMPLER_NOISE_SCALE,
           posterior: str = SAMPLER_POSTERIOR, on_step: Callable | None = None) -> MoleculeBatch:
    """len(num_atoms) molecules from the prior at t = 1 down to t = 0 in ``num_steps`` steps (any number:
    continuous time) on the grid ``sampler_times(num_steps, spacing)``, padded to ``max_atoms`` (default the
    largest count); ``noise_scale`` multiplies the coordinates' noise of every step and ``posterior`` picks the
    categories' reverse step (``MolecularDiffusion.step``). ``on_step(i, t, x, prediction, x_next)``, when given,
    sees every step (for diagnostics such as ``benchmarks/molecule_failures.py --trajectory``)."""
    check_noise_scale(noise_scale)
    dev = num_atoms.device
    times = sampler_times(num_steps, spacing, dev)
    n = int(max_atoms or num_atoms.max())
    mask = torch.arange(n, device=dev)[None, :] < num_atoms[:, None]
    x = process.sample_prior(mask, generator)
    for i in range(num_steps):
        t, s = times[i].expand(len(num_atoms)), times[i + 1].expand(len(num_atoms))
        pred = model(x, t, None).prediction
        x_next = process.step(x, pred, t, s, generator, last=i == num_steps - 1, noise_scale=noise_scale,
                              posterior=posterior)
        if on_step is not None:
            on_step(i, float(times[i]), x, pred, x_next)
        x = x_next
    return x


def size_distribution(histogram: np.ndarray, num_atoms: int | tuple[int, int] | None = None) -> np.ndarray:
    """Probabilities of each atom count: the training ``histogram``; with ``num_atoms`` a count (that count) or an
    inclusive range (the histogram restricted to it, uniform where the histogram has no mass there)."""
    hist = np.asarray(histogram, float)
    if num_atoms is None:
        return hist / hist.sum()
    lo, hi = (num_atoms, num_atoms) if isinstance(num_atoms, int) else num_atoms
    if not 1 <= lo <= hi:
        raise ValueError(f"atom counts must satisfy 1 <= low <= high, got {lo}-{hi}")
    p = np.zeros(hi + 1)
    m = min(len(hist), hi + 1)
    p[lo:m] = hist[lo:m]
    if p.sum() == 0:
        p[lo:] = 1.0
    return p / p.sum()


def sample_molecules(loaded: LoadedModel, n: int, *, num_steps: int = SAMPLER_STEPS, seed: int = 0, batch_size: int = 100,
                     progress: bool = False, device: str = "cpu", num_atoms: int | tuple[int, int] | None = None,
                     spacing: float = SAMPLER_SPACING, noise_scale: float = SAMPLER_NOISE_SCALE,
                     posterior: str = SAMPLER_POSTERIOR, on_step: Callable | None = None) -> dict[str, np.ndarray]:
    """``n`` molecules as numpy arrays (pos, atoms, charges (formal), bonds, mask); atom counts drawn from the
    training histogram, or fixed / restricted by ``num_atoms`` (see ``size_distribution``); ``num_steps``,
    ``spacing``, ``noise_scale``, ``posterior`` and ``on_step`` (called for every batch) as in ``sample``."""
    from tqdm.auto import tqdm

    g = torch.Generator(device=device).manual_seed(seed)
    hist = torch.as_tensor(size_distribution(loaded.atom_histogram, num_atoms), dtype=torch.float)
    pad_to = max(MAX_ATOMS, len(hist) - 1)
    out: dict[str, list] = {k: [] for k in ("pos", "atoms", "charges", "bonds", "mask")}
    for lo in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress):
        b = min(batch_size, n - lo)
        counts = torch.multinomial(hist, b, replacement=True, generator=torch.Generator().manual_seed(seed + lo)).to(device)
        a = sample(loaded.model, loaded.process, counts, num_steps=num_steps, generator=g, max_atoms=pad_to,
                   spacing=spacing, noise_scale=noise_scale, posterior=posterior, on_step=on_step).numpy()
        for k in ("pos", "atoms", "bonds", "mask"):
            out[k].append(a[k])
        out["charges"].append(np.asarray(CHARGES)[a["charges"]] * a["mask"])
    return {k: np.concatenate(v) for k, v in out.items()}
