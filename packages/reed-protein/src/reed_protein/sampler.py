"""Samplers (plain functions, explicit generators): ancestral unmasking of sequences for given backbones.

A variational-hybrid model (trained with ``LatentSpec(condition=True)``) designs unconditionally on its latents
(``latents="none"``) or on its own self-predicted z (``latents="self"``: the trained projector applied to the
model's hidden state at the current tokens; a latent read at an encoder layer, which never sees the sequence, is
projected once per structure, one read in the decoder costs an extra decoder pass per step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reed_core import AlignmentSpec, DenoiserOutput, LatentCondition, condition_features, project_hidden

from .constants import MASK_INDEX, UNMASK_ORDERS, X_INDEX
from .data import ProteinBatch
from .model import Encoding, ProteinDenoiser


def group_mean(values: torch.Tensor, tied: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``values`` averaged over each tied group along ``dim`` (``tied``: each position's group representative),
    read back at every member."""
    sums = torch.zeros_like(values).index_add_(dim, tied, values)
    counts = torch.bincount(tied, minlength=values.shape[dim]).clamp_min(1).to(values)
    return (sums / counts.view(-1, *[1] * (values.dim() - dim - 1))).index_select(dim, tied)


def tied_union(flags: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """(L, C) bool flags with each tied group's (``tied``: each position's group representative) union read
    back at every member."""
    return torch.zeros_like(flags, dtype=torch.int).index_add_(0, tied, flags.int())[tied] > 0


@torch.no_grad()
def sample_sequences(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: ProteinBatch, *,
                     num_steps: int = 20, temperature: float = 0.1, bias: torch.Tensor | None = None,
                     omit: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     tied: torch.Tensor | None = None, pssm: tuple[torch.Tensor, torch.Tensor] | None = None,
                     pssm_allowed: torch.Tensor | None = None, return_probs: bool = False, order: str = "random"
                     ) -> tuple[torch.Tensor, ...]:
    """Designed tokens (B,L) and the log-probability each designed token had when it was unmasked; with
    ``return_probs``, also the distribution (B,L,21) each designed residue was drawn from (tempered, biased,
    omitted types at 0, the PSSM mixed in: ProteinMPNN's ``--save_probs`` ``probs``; 0 at residues not designed).

    ``decode(S, t)`` returns logits (B,L,21) for the current tokens (only the still-masked residues' are read).
    ``x.design_mask`` marks designable residues (the others keep ``x.S``). Between times t > s each still-masked residue is unmasked with probability
    (t - s) / t, drawn from softmax(logits / temperature); ``bias`` (21,) or per residue (L,21) is added to the
    logits; ``omit`` (21,) or per residue (L,21) bool excludes residue types; X is always excluded. ``tied`` (L,)
    long: for each position the position it is tied to (itself when untied; ProteinMPNN's tied positions): a tied
    group shares the mean of its biased logits, the union of its omitted types, one draw and one unmasking coin,
    so its residues are identical.

    ``order``: which still-masked residues are unmasked at each step. ``"random"``: each with probability
    (t - s) / t, independently (the reverse process of the training corruption). ``"confidence"``: the same number,
    round((t - s) / t * still masked), but those whose drawn residue type has the highest probability (MaskGIT's
    confidence-ordered decoding: the surest residues first, the rest conditioned on them); a tied group counts once,
    by its first position's draw.

    ProteinMPNN's PSSM options act on the tempered probabilities, as in its sampler: ``pssm = (weight (L,), target
    (L,21))`` mixes them into ``(1 - weight) * p + weight * target`` (its ``--pssm_multi`` times ``pssm_coef``, and
    ``pssm_bias``); ``pssm_allowed`` (L,21) bool weighs the types it allows 1.001 and the others 0.001 (its
    ``--pssm_log_odds_flag`` at ``--pssm_threshold``); omitted types stay at 0 (the rest renormalised; a residue
    whose mix leaves nothing falls back to the model's probabilities). A tied group uses the mean of its members'
    weights and weighted targets and allows only what every member allows.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if order not in UNMASK_ORDERS:
        raise ValueError(f"order must be one of {UNMASK_ORDERS}, got {order!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    design = x.design_mask
    S = torch.where(design, torch.full_like(x.S, MASK_INDEX), x.S)
    logp_tok = torch.zeros(S.shape, device=S.device)
    banned = torch.zeros(X_INDEX + 1, dtype=torch.bool, device=S.device)
    banned[X_INDEX] = True
    if omit is not None:
        banned = banned | omit.to(S.device)
    if tied is not None and banned.dim() == 2:  # a tied group omits what any of its members omits
        banned = tied_union(banned, tied)
    none_left = banned[..., :X_INDEX].all(-1)
    if bool((none_left & design).any()):
        where = "" if none_left.dim() == 0 else f" at position {int((none_left & design).nonzero()[0, -1])}"
        raise ValueError(f"every amino acid is omitted{where}")
    if none_left.dim() == 1:  # a residue that is not designed keeps finite logits (it is drawn but never used)
        banned = banned & ~none_left[:, None]
    if pssm is not None:
        weight, target = pssm[0].to(S.device, torch.float32), pssm[1].to(S.device, torch.float32)
        if tied is not None:
            weight, target = group_mean(weight, tied), group_mean(weight[:, None] * target, tied)
        else:
            target = weight[:, None] * target
        pssm = (weight[:, None], target)  # p -> (1 - w) p + (w t)
    if pssm_allowed is not None:
        restricted = ~pssm_allowed.to(S.device)
        if tied is not None:
            restricted = tied_union(restricted, tied)
        keep = (~restricted).float() + 0.001  # ProteinMPNN's probs * mask + probs * 0.001
    drawn_from = torch.zeros((*S.shape, X_INDEX + 1), device=S.device) if return_probs else None
    times = torch.linspace(1.0, 0.0, num_steps + 1, device=S.device)
    for i in range(num_steps):
        t, s = times[i], times[i + 1]
        logits = decode(S, t.expand(S.shape[0])).float()
        if bias is not None:
            logits = logits + bias.to(logits)
        if tied is not None:  # mean logits (biases included) of each group, read back at every member
            logits = group_mean(logits, tied, dim=1)
        logits = logits.masked_fill(banned, float("-inf"))
        probs = F.log_softmax(logits / temperature, dim=-1).exp()
        if pssm is not None or pssm_allowed is not None:
            tempered = probs
            if pssm is not None:
                probs = (1.0 - pssm[0]) * probs + pssm[1]
            if pssm_allowed is not None:
                probs = probs * keep
            probs = probs.masked_fill(banned, 0.0)
            total = probs.sum(-1, keepdim=True)
            probs = torch.where(total > 0, probs / total.clamp_min(1e-30), tempered)
        draw = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(S.shape)
        still = S == MASK_INDEX
        p_unmask = float((t - s) / t) if i < num_steps - 1 else 1.0
        if order == "random":
            coin = torch.rand(S.shape, device=S.device, generator=generator) < p_unmask
        else:  # the round(p * n) candidates (still masked; a tied group's first position) whose draw is surest
            leader = still if tied is None else still & (tied == torch.arange(len(tied), device=S.device))
            conf = probs.gather(-1, draw[..., None]).squeeze(-1).masked_fill(~leader, -1.0)
            k = (leader.sum(1, keepdim=True) * p_unmask).round().long()
            rank = torch.empty_like(draw).scatter_(1, conf.argsort(dim=1, descending=True, stable=True),
                                                   torch.arange(S.shape[1], device=S.device).expand_as(draw))
            coin = leader & (rank < k)
        if tied is not None:
            draw, coin = draw[:, tied], coin[:, tied]
        go = still & coin
        S = torch.where(go, draw, S)
        logp_tok = torch.where(go, F.log_softmax(logits, -1).gather(-1, draw[..., None]).squeeze(-1), logp_tok)
        if drawn_from is not None:
            drawn_from = torch.where(go[..., None], probs, drawn_from)
    return (S, logp_tok, drawn_from) if return_probs else (S, logp_tok)


LATENT_MODES = ("none", "self")


def decoder(model: ProteinDenoiser, x: ProteinBatch, encoding: Encoding | None = None, *,
            specs: Sequence[AlignmentSpec] = (), projectors: nn.Module | None = None, latents: str = "none"
            ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``decode(S, t) -> logits`` for the structures ``x``, encoded once (or given as ``encoding``); only the
    still-masked residues' logits are computed unless hybrid latents are in use (the others are 0). For a hybrid
    model, ``latents``: ``"none"`` or ``"self"`` (needs its hybrid ``specs`` and trained ``projectors``)."""
    if latents not in LATENT_MODES:
        raise ValueError(f"latent mode must be one of {LATENT_MODES}, got {latents!r}")
    hybrid = [s for s in specs if s.condition] if latents == "self" else []
    if latents == "self" and (not hybrid or projectors is None):
        raise ValueError("latents='self' needs a variational-hybrid model: its hybrid specs and trained projectors")
    fixed = [s for s in hybrid if s.layer.startswith("enc")]
    enc = encoding
    if enc is None or any(s.layer not in enc.hiddens for s in fixed):
        enc = model.encode(x, capture=tuple(s.layer for s in fixed))
    if not hybrid:  # only the still-masked residues' logits are drawn from
        return lambda S, t: model.decode(enc, S, rows=S == MASK_INDEX).prediction
    keep = torch.ones(x.S.shape[0], dtype=torch.bool, device=x.S.device)

    def condition(s: AlignmentSpec, out: DenoiserOutput) -> LatentCondition:
        z_hat, mask = project_hidden(s, projectors, out)
        return LatentCondition(condition_features(s, z_hat, predicted=True), keep, mask)

    once = {s.name: condition(s, DenoiserOutput(None, enc.hiddens, enc.masks)) for s in fixed}
    per_step = [s for s in hybrid if s not in fixed]
    capture = tuple(dict.fromkeys(s.layer for s in per_step))

    def decode(S: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lat = dict(once)
        if per_step:
            out = model.decode(enc, S, capture)
            lat |= {s.name: condition(s, out) for s in per_step}
        return model.decode(enc, S, latents=lat).prediction

    return decode


@torch.no_grad()
def design_batch(model: ProteinDenoiser, x: ProteinBatch, *, num_steps: int = 20, temperature: float = 0.1,
                 generator: torch.Generator | None = None, bias=None, omit=None, encoding: Encoding | None = None,
                 tied: torch.Tensor | None = None, specs: Sequence[AlignmentSpec] = (),
                 projectors: nn.Module | None = None, latents: str = "none", pssm=None, pssm_allowed=None,
                 return_probs: bool = False, order: str = "random"):
    """Sample sequences for a batch of structures with the structure encoded once (or given as ``encoding``);
    ``specs`` / ``projectors`` / ``latents``: a hybrid model's latents (see ``decoder``); ``pssm`` /
    ``pssm_allowed`` / ``return_probs`` / ``order``: see ``sample_sequences``. Returns (tokens, per-token log-probs[, the
    distributions drawn from])."""
    model.eval()
    decode = decoder(model, x, encoding, specs=specs, projectors=projectors, latents=latents)
    return sample_sequences(decode, x, num_steps=num_steps, temperature=temperature, bias=bias, omit=omit,
                            generator=generator, tied=tied, pssm=pssm, pssm_allowed=pssm_allowed,
                            return_probs=return_probs, order=order)
