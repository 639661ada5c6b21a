"""Samplers (plain functions, explicit generators): ancestral unmasking of sequences for given backbones."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .constants import MASK_INDEX, X_INDEX
from .data import ProteinBatch
from .model import Encoding, ProteinDenoiser


@torch.no_grad()
def sample_sequences(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: ProteinBatch, *,
                     num_steps: int = 20, temperature: float = 0.1, bias: torch.Tensor | None = None,
                     omit: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     tied: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Designed tokens (B,L) and the log-probability each designed token had when it was unmasked.

    ``decode(S, t)`` returns logits (B,L,21) for the current tokens. ``x.design_mask`` marks designable residues
    (the others keep ``x.S``). Between times t > s each still-masked residue is unmasked with probability
    (t - s) / t, drawn from softmax(logits / temperature); ``bias`` (21,) is added to the logits; ``omit`` (21,)
    bool excludes residue types; X is always excluded. ``tied`` (L,) long: for each position the position it is
    tied to (itself when untied; ProteinMPNN's tied positions): a tied group shares the mean of its logits, one
    draw and one unmasking coin, so its residues are identical.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    design = x.design_mask
    S = torch.where(design, torch.full_like(x.S, MASK_INDEX), x.S)
    logp_tok = torch.zeros(S.shape, device=S.device)
    banned = torch.zeros(X_INDEX + 1, dtype=torch.bool, device=S.device)
    banned[X_INDEX] = True
    if omit is not None:
        banned |= omit.to(S.device)
    if bool(banned[:X_INDEX].all()):
        raise ValueError("every amino acid is omitted")
    times = torch.linspace(1.0, 0.0, num_steps + 1, device=S.device)
    for i in range(num_steps):
        t, s = times[i], times[i + 1]
        logits = decode(S, t.expand(S.shape[0])).float()
        if tied is not None:  # mean logits of each group, read back at every member
            sums = torch.zeros_like(logits).index_add_(1, tied, logits)
            logits = (sums / torch.bincount(tied, minlength=S.shape[1]).clamp_min(1)[None, :, None])[:, tied]
        if bias is not None:
            logits = logits + bias.to(logits)
        logits = logits.masked_fill(banned, float("-inf"))
        logp = F.log_softmax(logits / temperature, dim=-1)
        draw = torch.multinomial(logp.exp().flatten(0, 1), 1, generator=generator).view(S.shape)
        still = S == MASK_INDEX
        p_unmask = float((t - s) / t) if i < num_steps - 1 else 1.0
        coin = torch.rand(S.shape, device=S.device, generator=generator) < p_unmask
        if tied is not None:
            draw, coin = draw[:, tied], coin[:, tied]
        go = still & coin
        S = torch.where(go, draw, S)
        logp_tok = torch.where(go, F.log_softmax(logits, -1).gather(-1, draw[..., None]).squeeze(-1), logp_tok)
    return S, logp_tok


@torch.no_grad()
def design_batch(model: ProteinDenoiser, x: ProteinBatch, *, num_steps: int = 20, temperature: float = 0.1,
                 generator: torch.Generator | None = None, bias=None, omit=None, encoding: Encoding | None = None,
                 tied: torch.Tensor | None = None):
    """Sample sequences for a batch of structures with the structure encoded once (or given as ``encoding``).
    Returns (tokens, per-token log-probs)."""
    model.eval()
    enc = encoding if encoding is not None else model.encode(x)
    return sample_sequences(lambda S, t: model.decode(enc, S).prediction, x, num_steps=num_steps,
                            temperature=temperature, bias=bias, omit=omit, generator=generator, tied=tied)
