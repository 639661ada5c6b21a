"""Samplers (plain functions, explicit generators): ancestral sampling of molecules from a trained denoiser."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .constants import CHARGES
from .data import MAX_ATOMS, MoleculeBatch
from .loading import LoadedModel
from .process import MolecularDiffusion


@torch.no_grad()
def sample(model: nn.Module, process: MolecularDiffusion, num_atoms: torch.Tensor, *, num_steps: int = 100,
           generator: torch.Generator | None = None, max_atoms: int | None = None) -> MoleculeBatch:
    """len(num_atoms) molecules from the prior at t = 1 down to t = 0 in ``num_steps`` steps (any number:
    continuous time), padded to ``max_atoms`` (default the largest count)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dev = num_atoms.device
    n = int(max_atoms or num_atoms.max())
    mask = torch.arange(n, device=dev)[None, :] < num_atoms[:, None]
    x = process.sample_prior(mask, generator)
    times = torch.linspace(1.0, 0.0, num_steps + 1, device=dev)
    for i in range(num_steps):
        t, s = times[i].expand(len(num_atoms)), times[i + 1].expand(len(num_atoms))
        x = process.step(x, model(x, t, None).prediction, t, s, generator, last=i == num_steps - 1)
    return x


def sample_molecules(loaded: LoadedModel, n: int, *, num_steps: int = 100, seed: int = 0, batch_size: int = 100,
                     progress: bool = False, device: str = "cpu") -> dict[str, np.ndarray]:
    """``n`` molecules with atom counts drawn from the training histogram, as numpy arrays (pos, atoms,
    charges (formal), bonds, mask)."""
    from tqdm.auto import tqdm

    g = torch.Generator(device=device).manual_seed(seed)
    hist = torch.as_tensor(loaded.atom_histogram / loaded.atom_histogram.sum(), dtype=torch.float)
    out: dict[str, list] = {k: [] for k in ("pos", "atoms", "charges", "bonds", "mask")}
    for lo in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress):
        b = min(batch_size, n - lo)
        counts = torch.multinomial(hist, b, replacement=True, generator=torch.Generator().manual_seed(seed + lo)).to(device)
        a = sample(loaded.model, loaded.process, counts, num_steps=num_steps, generator=g, max_atoms=MAX_ATOMS).numpy()
        for k in ("pos", "atoms", "bonds", "mask"):
            out[k].append(a[k])
        out["charges"].append(np.asarray(CHARGES)[a["charges"]] * a["mask"])
    return {k: np.concatenate(v) for k, v in out.items()}
