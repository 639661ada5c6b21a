"""A ProteinMPNN-style denoiser for masked discrete diffusion over sequences given a backbone.

Encoder (structure only): message passing over the kNN graph with node and edge updates. Decoder: message
passing over [h_V_i, h_E_ij, h_S_j, h_V_j] where h_S is the embedding of the current, partially masked
sequence (no autoregressive order: every neighbour's current token is visible). Output: logits over the 20
amino acids and X. The encoder depends only on the structure, so a sampler encodes once and decodes many
times (``encode`` / ``decode``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reed_core import DenoiserOutput

from .constants import ALPHABET, VOCAB
from .data import ProteinBatch
from .features import ATOM_PAIRS, MAX_REL, NUM_RBF, featurize, gather_nodes, one_hot_rel


@dataclass(frozen=True)
class ProteinModelConfig:
    hidden: int = 128
    encoder_layers: int = 3
    decoder_layers: int = 3
    k: int = 30
    dropout: float = 0.1
    latent_dims: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.hidden, self.encoder_layers, self.decoder_layers, self.k) < 1:
            raise ValueError(f"hidden, layers and k must be >= 1, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


PROTEIN_PRESETS: dict[str, ProteinModelConfig] = {
    "paper": ProteinModelConfig(hidden=128, encoder_layers=3, decoder_layers=3, k=30),  # ProteinMPNN size
    "small": ProteinModelConfig(hidden=96, encoder_layers=3, decoder_layers=3, k=24),
    "tiny": ProteinModelConfig(hidden=64, encoder_layers=2, decoder_layers=2, k=16, dropout=0.0),
}


class MessageLayer(nn.Module):
    """Node update from neighbour messages (sum / scale), then a feed-forward block; optional edge update."""

    def __init__(self, hidden: int, msg_in: int, dropout: float, edge_update: bool, scale: float = 30.0) -> None:
        super().__init__()
        self.scale = scale
        self.msg = nn.Sequential(nn.Linear(msg_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden))
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)
        self.edge = None
        if edge_update:
            self.edge = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                      nn.GELU(), nn.Linear(hidden, hidden))
            self.norm3 = nn.LayerNorm(hidden)

    def forward(self, h_V, parts, E_idx, node_mask, edge_mask, h_E=None):
        """``parts``: the message input as (kind, tensor) pieces, see ``pair_mlp``."""
        # sum_k mask_k (W z_k + b) = W (sum_k mask_k z_k) + b sum_k mask_k: the message MLP's last linear layer
        # runs on the per-residue sum, not on every edge (half of its per-edge matmuls)
        z, last = pair_mlp(self.msg[:-1], parts, E_idx), self.msg[-1]
        B, L, K, H = z.shape
        w = edge_mask.to(z.dtype).expand(B, L, K)
        zs = torch.bmm(w.reshape(B * L, 1, K), z.reshape(B * L, K, H)).view(B, L, H)  # masked sum over k
        m = F.linear(zs, last.weight) + w.sum(-1, keepdim=True) * last.bias
        h_V = self.norm1(h_V + self.drop(m / self.scale))
        h_V = self.norm2(h_V + self.drop(self.ff(h_V))) * node_mask[..., None]
        if self.edge is not None:
            e = pair_mlp(self.edge, [("i", h_V), ("e", h_E), ("j", h_V)], E_idx)
            h_E = self.norm3(h_E + self.drop(e)) * edge_mask[..., None]
        return h_V, h_E


def pair_mlp(mlp: nn.Sequential, parts, E_idx: torch.Tensor) -> torch.Tensor:
    """``mlp`` applied to the per-edge concatenation of ``parts`` without building it (B,L,K,sum d): the first
    linear layer is split by columns. Kinds: "i" node features of the receiving residue (B,L,d), "j" node
    features of the neighbour, "e" edge features (B,L,K,d), "p" an edge part already projected by its columns
    (B,L,K,H) with its width given as ``(tensor, d)``. The "i" parts and the "j" parts are each projected and summed
    on the L residues, so the neighbours' part is gathered once. A batch of 1 broadcasts (see ``gather_nodes``)."""
    first = mlp[0]
    node_i = node_j = None
    edge, col = first.bias, 0
    for kind, x in parts:
        if kind == "p":
            x, d = x
            edge = edge + x
            col += d
            continue
        d = x.shape[-1]
        y = F.linear(x, first.weight[:, col:col + d])
        col += d
        if kind == "i":
            node_i = y if node_i is None else node_i + y
        elif kind == "j":
            node_j = y if node_j is None else node_j + y
        else:
            edge = edge + y
    if col != first.in_features:
        raise ValueError(f"message parts cover {col} of {first.in_features} input features")
    out = edge if node_i is None else edge + node_i[:, :, None]
    if node_j is not None:
        out = out + gather_nodes(node_j, E_idx)
    return mlp[1:](out)


@dataclass(frozen=True)
class Encoding:
    h_V: torch.Tensor  # (B,L,H)
    h_E: torch.Tensor  # (B,L,K,H)
    E_idx: torch.Tensor  # (B,L,K)
    edge_mask: torch.Tensor  # (B,L,K)
    node_mask: torch.Tensor  # (B,L)
    hiddens: Mapping[str, torch.Tensor]
    masks: Mapping[str, torch.Tensor]
    cache: dict = field(default_factory=dict)  # per-layer projections of h_E reused by every decoder pass


class ProteinDenoiser(nn.Module):
    """``forward(x_t, t, cond=None, *, capture=(), latents=None) -> DenoiserOutput(logits (B,L,21), ...)``.

    ``x_t`` is a ``ProteinBatch`` whose ``S`` holds the current tokens (``MASK_INDEX`` where masked).
    Capturable hiddens: ``enc{k}`` / ``dec{k}`` node features (B,L,H) and ``edge{k}`` encoder edge features
    (B,L,K,H) at the kNN edges (same neighbours as ``features.knn_graph`` with this model's k).
    A variational hybrid (``cfg.latent_dims``) adds ``latents={name: LatentCondition}``, per residue (B,L,D) or
    per chain (B,D), through a linear map (zero at init) to the decoder's input of the samples that keep them.
    """

    def __init__(self, cfg: ProteinModelConfig = PROTEIN_PRESETS["tiny"]) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.pos_embed = nn.Linear(2 * MAX_REL + 2, 16)
        self.edge_embed = nn.Linear(16 + len(ATOM_PAIRS) * NUM_RBF, H)
        self.edge_norm = nn.LayerNorm(H)
        self.encoder = nn.ModuleList(MessageLayer(H, 3 * H, cfg.dropout, True) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(MessageLayer(H, 4 * H, cfg.dropout, False) for _ in range(cfg.decoder_layers))
        self.seq_embed = nn.Embedding(VOCAB, H)
        self.latent_embed = nn.ModuleDict({k: nn.Linear(d, H) for k, d in cfg.latent_dims.items()})
        for lin in self.latent_embed.values():  # a hybrid starts as the unconditional model
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.out = nn.Linear(H, len(ALPHABET))

    def encode(self, x: ProteinBatch, capture=()) -> Encoding:
        feats, rel, E_idx, edge_mask = featurize(x.X, x.mask, x.residue_idx, x.chain_idx, self.cfg.k)
        h_E = self.edge_norm(self.edge_embed(torch.cat([self.pos_embed(one_hot_rel(rel).to(feats.dtype)), feats], -1)))
        h_E = h_E * edge_mask[..., None]
        B, L, K, H = h_E.shape
        h_V = torch.zeros(B, L, H, device=h_E.device, dtype=h_E.dtype)
        hiddens, masks = {}, {}
        for k, layer in enumerate(self.encoder, start=1):
            h_V, h_E = layer(h_V, [("i", h_V), ("e", h_E), ("j", h_V)], E_idx, x.mask, edge_mask, h_E)
            if f"enc{k}" in capture:
                hiddens[f"enc{k}"], masks[f"enc{k}"] = h_V, x.mask
            if f"edge{k}" in capture:
                hiddens[f"edge{k}"], masks[f"edge{k}"] = h_E, edge_mask
        return Encoding(h_V, h_E, E_idx, edge_mask, x.mask, hiddens, masks)

    def decode(self, enc: Encoding, S: torch.Tensor, capture=(), latents=None, rows: torch.Tensor | None = None
               ) -> DenoiserOutput:
        """Logits for the tokens ``S`` (B,L); an encoding of batch 1 (one structure) is broadcast over S's batch.

        ``rows`` (B,L) bool: only these residues' logits are wanted (a sampler's still-masked residues, a scorer's
        masked ones): the last decoder layer then runs at those residues only, since no other residue reads its
        output, and the other logits are 0. The wanted logits equal the full pass's (to float rounding)."""
        h_V, h_E, E_idx = enc.h_V, enc.h_E, enc.E_idx
        B, L, K, H = h_E.shape
        h_S = self.seq_embed(S)
        h = h_V + h_S
        if latents:
            for name, lat in latents.items():
                z = self.latent_embed[name](lat.z.to(h.dtype))
                z = z[:, None, :] if z.dim() == 2 else z
                h = h + lat.keep.to(h.dtype)[:, None, None] * z
        hiddens, masks = dict(enc.hiddens), dict(enc.masks)
        n = len(self.decoder)
        if rows is not None and f"dec{n}" in capture:
            rows = None  # the last layer's hidden state is wanted everywhere
        for k, layer in enumerate(self.decoder, start=1):
            if k not in enc.cache:  # the structure part of the message is the same at every sampling step
                enc.cache[k] = F.linear(h_E, layer.msg[0].weight[:, H:2 * H])
            if k == n and rows is not None:
                return DenoiserOutput(self._last_layer_at(layer, enc, h, h_S, rows), hiddens, masks)
            parts = [("i", h), ("p", (enc.cache[k], H)), ("j", h_S), ("j", h)]
            h, _ = layer(h, parts, E_idx, enc.node_mask, enc.edge_mask)
            if f"dec{k}" in capture:
                hiddens[f"dec{k}"], masks[f"dec{k}"] = h, enc.node_mask
        unknown = set(capture) - set(hiddens)
        if unknown:
            raise KeyError(f"unknown capture names {sorted(unknown)}; use enc1.., edge1.., dec1..")
        return DenoiserOutput(self.out(h), hiddens, masks)

    def _last_layer_at(self, layer: MessageLayer, enc: Encoding, h: torch.Tensor, h_S: torch.Tensor,
                       rows: torch.Tensor) -> torch.Tensor:
        """The last decoder layer and the output head at the residues ``rows`` (B,L) only, as one batch of the
        selected residues whose neighbours index the flattened (B*L) residues; logits (B,L,21), 0 elsewhere."""
        B, L, H = h.shape
        K = enc.E_idx.shape[-1]
        at = rows.expand(B, L).reshape(-1).nonzero()[:, 0]  # (N,) flat residue indices
        if at.numel() == 0:
            return h.new_zeros(B, L, self.out.out_features)
        b, i = at // L, at % L
        src = b if enc.E_idx.shape[0] == B else torch.zeros_like(b)  # a batch-1 encoding serves every sequence
        E_at = (enc.E_idx[src, i] + b[:, None] * L)[None]  # (1,N,K) into the flattened residues
        h_at = h.reshape(B * L, H)[at][None]
        parts = [("i", h_at), ("p", (enc.cache[len(self.decoder)][src, i][None], H)),
                 ("j", h_S.expand(B, L, H).reshape(1, B * L, H)), ("j", h.reshape(1, B * L, H))]
        out, _ = layer(h_at, parts, E_at, enc.node_mask[src, i][None], enc.edge_mask[src, i].view(1, -1, K))
        logits = self.out(out[0])
        full = logits.new_zeros(B * L, logits.shape[-1])
        return full.index_copy(0, at, logits).view(B, L, -1)

    def forward(self, x_t: ProteinBatch, t: torch.Tensor | None = None, cond: Any = None, *, capture=(),
                latents=None) -> DenoiserOutput:
        return self.decode(self.encode(x_t, capture), x_t.S, capture, latents)

