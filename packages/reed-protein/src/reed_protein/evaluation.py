"""Held-out evaluation of inverse folding: recovery of sampled designs and native-sequence perplexity."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .constants import MASK_INDEX, X_INDEX
from .data import ChainSet
from .model import ProteinDenoiser
from .sampler import decoder, sample_sequences


def length_order(chains: ChainSet, ids: np.ndarray) -> np.ndarray:
    """The permutation that orders ``ids`` by chain length (stable)."""
    return np.argsort(np.diff(chains.offsets)[np.asarray(ids)], kind="stable")


def length_sorted(chains: ChainSet, ids: np.ndarray) -> np.ndarray:
    """``ids`` ordered by chain length (stable): batches of similar lengths, little padding."""
    return np.asarray(ids)[length_order(chains, ids)]


def recovery(S: torch.Tensor, x) -> torch.Tensor:
    """(B,) fraction of the designed residues with a backbone (native X excluded) where ``S`` is the native type."""
    scored = x.design_mask & (x.S != X_INDEX)
    return ((S == x.S) & scored).sum(1).float() / scored.sum(1).clamp_min(1)


@torch.no_grad()
def evaluate(model: ProteinDenoiser, chains: ChainSet, ids: np.ndarray, *, num_steps: int = 20,
             temperature: float = 0.1, batch_size: int = 16, seed: int = 0, device: str = "cpu",
             max_length: int | None = None, specs=(), projectors=None, latents: str = "none",
             order: str = "random", per_chain: bool = False) -> dict:
    """Sequence recovery of sampled designs (mean over chains) and perplexity of the native sequence given the
    structure with every residue masked (one pass). Chains are batched by length (little padding). A hybrid
    model's ``specs`` / ``projectors`` / ``latents``: see ``sampler.decoder``; ``order``: see
    ``sampler.sample_sequences``. ``per_chain``: also ``"per_chain"``, each chain's recovery (%) in the order of
    ``ids``, for paired comparisons."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    order_of = length_order(chains, ids)
    ids = np.asarray(ids)[order_of]
    recov, nll, count = [], 0.0, 0
    for lo in range(0, len(ids), batch_size):
        x = chains.batch(ids[lo:lo + batch_size], max_length).to(device)
        decode = decoder(model, x, specs=specs, projectors=projectors, latents=latents)
        S, _ = sample_sequences(decode, x, num_steps=num_steps, temperature=temperature, generator=g, order=order)
        scored = x.design_mask & (x.S != X_INDEX)
        recov.extend(recovery(S, x).tolist())
        logits = decode(torch.where(x.design_mask, torch.full_like(x.S, MASK_INDEX), x.S), torch.ones(len(x.S), device=device))
        ce = F.cross_entropy(logits.float().transpose(1, 2), x.S, reduction="none")
        nll += float((ce * scored).sum())
        count += int(scored.sum())
    out = {"recovery": 100.0 * float(np.mean(recov)), "perplexity": math.exp(nll / max(count, 1)), "chains": len(ids)}
    if per_chain:  # recov follows the length-sorted order: back to the caller's
        out["per_chain"] = (100.0 * np.asarray(recov)[np.argsort(order_of, kind="stable")]).tolist()
    return out
