"""An EQGAT-diff-style E(3)-equivariant denoiser on the fully connected molecular graph (dense, padded).

Every atom carries invariant scalars ``s`` (B,N,S) and equivariant vectors ``v`` (B,N,3,V); every atom pair an
invariant edge feature ``e`` (B,N,N,E); coordinates ``pos`` (B,N,3) are updated in every layer. A layer:

1. edge MLP on [s_i, s_j, e_ij, RBF(d_ij)] -> per-head attention logits, scalar messages, vector gates;
2. attention over the real neighbours j != i (softmax per head, padded atoms excluded);
3. s_i += sum_j a_ij m_ij;  v_i += sum_j a_ij (g_ij r_ij/|r_ij| + h_ij v_j);  pos_i += W v_i (zero CoM kept);
4. a gated feed-forward on (s, |v|) and an edge update from [e_ij, s_i + s_j, RBF(d_ij)].

Scalars, edges and every logit are invariant to rotations, reflections and translations; vectors and
coordinates are equivariant; everything is permutation-equivariant in the atoms. Padded atoms are zeroed
after every layer and never enter attention or pooling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reed_core import DenoiserOutput

from .config import MODEL_PRESETS, ModelConfig
from .constants import CHARGES, ELEMENTS
from .data import MoleculeBatch, remove_com


@dataclass(frozen=True)
class MoleculePrediction:
    """x0 prediction: coordinates (B,N,3) with zero CoM, and invariant logits for atoms (B,N,5), charges
    (B,N,3) and bonds (B,N,N,4) (symmetric)."""

    pos: torch.Tensor
    atom_logits: torch.Tensor
    charge_logits: torch.Tensor
    bond_logits: torch.Tensor


class GaussianRBF(nn.Module):
    def __init__(self, num: int, maximum: float) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, maximum, num), persistent=False)
        self.gamma = (num / maximum) ** 2 / 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (d[..., None] - self.centers.to(d.dtype)) ** 2)


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, o))


@dataclass(frozen=True)
class Pairs:
    """The P real atom pairs (i != j, both real) of a padded batch, packed: per-pair tensors are (P, C) rows instead
    of (B,N,N,C), so no work is spent on padding (QM9 batches: ~40 % of the dense pairs are real). ``row`` / ``col``
    index the (B*N) flattened atoms i / j; ``flat`` the (B*N*N) flattened pair."""

    row: torch.Tensor
    col: torch.Tensor
    flat: torch.Tensor
    shape: tuple[int, int]

    @staticmethod
    def of(pair_mask: torch.Tensor) -> Pairs:
        B, N, _ = pair_mask.shape
        flat = pair_mask.reshape(-1).nonzero().squeeze(1)
        row = flat // N
        return Pairs(row, (row // N) * N + flat % N, flat, (B, N))

    def dense(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """(P, C) -> (B, N, N, C), ``fill`` on the pairs that are not real."""
        B, N = self.shape
        out = x.new_full((B * N * N, x.shape[-1]), fill)
        return out.index_copy(0, self.flat, x).view(B, N, N, -1)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of per-pair rows (P, ...) over j for every atom i -> (B, N, ...)."""
        B, N = self.shape
        return x.new_zeros((B * N, *x.shape[1:])).index_add(0, self.row, x).view(B, N, *x.shape[1:])


class PairMLP(nn.Module):
    """MLP on [a_i, a_j, pair_ij] for the real pairs only, without materialising the concatenation: the first linear
    layer is split into per-atom parts (computed on the atoms, gathered per pair) and per-pair parts.
    ``symmetric=True`` shares the i and j weights, so the output is symmetric when ``pair`` is."""

    def __init__(self, atom: int, pairs: tuple[int, ...], hidden: int, out: int, symmetric: bool = False) -> None:
        super().__init__()
        self.li = nn.Linear(atom, hidden)
        self.lj = None if symmetric else nn.Linear(atom, hidden, bias=False)
        self.lp = nn.ModuleList(nn.Linear(p, hidden, bias=False) for p in pairs)
        self.out = nn.Linear(hidden, out)

    def forward(self, a: torch.Tensor, index: Pairs, *pairs: torch.Tensor) -> torch.Tensor:
        """``a`` (B,N,F) atoms; ``pairs`` packed (P, C_k) -> (P, out)."""
        hi = self.li(a).flatten(0, 1)
        hj = hi - self.li.bias if self.lj is None else self.lj(a).flatten(0, 1)
        h = hi.index_select(0, index.row) + hj.index_select(0, index.col)
        for lin, p in zip(self.lp, pairs, strict=True):
            h = torch.addmm(h, p, lin.weight.t())  # the add inside the GEMM
        return self.out(F.silu(h))


def _geometry(pos: torch.Tensor, index: Pairs, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors r_ij / |r_ij| (P,3) with r_ij = x_i - x_j, and distances (P,), for the real pairs."""
    flat = pos.flatten(0, 1)
    r = flat.index_select(0, index.row) - flat.index_select(0, index.col)
    d = torch.sqrt((r * r).sum(-1) + eps * eps)
    return r / (d[..., None] + eps), d


class EQGATLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        S, V, E, H = cfg.scalars, cfg.vectors, cfg.edges, cfg.heads
        self.H, self.V = H, V
        self.norm_s = nn.LayerNorm(S)
        self.norm_e = nn.LayerNorm(E)
        self.edge_mlp = PairMLP(S, (E, cfg.rbf), S, H + S + 2 * V)
        self.s_out = nn.Linear(S, S)
        self.v_mix = nn.Linear(V, V, bias=False)
        self.pos_out = nn.Linear(V, 1, bias=False)
        self.ff = _mlp(S + V, S, S + V)
        self.edge_update = PairMLP(S, (E, cfg.rbf), E, E, symmetric=True)
        nn.init.zeros_(self.pos_out.weight)

    def forward(self, s, v, e, pos, geom, mask, index: Pairs, rbf: GaussianRBF):
        """``e`` (P,E) and ``geom`` = (unit vectors (P,3), RBF of distances (P,R)) of the real pairs of ``pos``;
        returns the new geometry too."""
        B, N, S = s.shape
        unit, rbf_d = geom
        sn = self.norm_s(s)
        en = self.norm_e(e)  # e is not updated before edge_update: one norm serves both
        out = self.edge_mlp(sn, index, en, rbf_d)
        logits, msg, g_r, g_v = out.split([self.H, S, self.V, self.V], dim=-1)
        dense = index.dense(logits, float("-inf"))
        att = torch.softmax(dense, dim=2).nan_to_num(0.0).flatten(0, 2).index_select(0, index.flat)  # (P,H); no neighbours -> 0
        agg = index.aggregate((att[..., None] * msg.view(-1, self.H, S // self.H)).flatten(1))
        s = s + self.s_out(agg)
        a = att.mean(-1, keepdim=True)  # (P,1)
        v_j = v.flatten(0, 1).index_select(0, index.col)  # (P,3,V)
        dv = index.aggregate((a * g_r)[:, None, :] * unit[:, :, None] + (a * g_v)[:, None, :] * v_j)
        v = v + self.v_mix(dv)
        pos = remove_com(pos + self.pos_out(v).squeeze(-1), mask)
        vnorm = torch.sqrt((v * v).sum(2) + 1e-8)  # (B,N,V)
        ds, gate = self.ff(torch.cat([self.norm_s(s), vnorm], -1)).split([S, self.V], -1)
        s = s + ds
        v = v * torch.sigmoid(gate)[:, :, None, :]
        v = v / torch.sqrt((v * v).sum(2, keepdim=True).mean(-1, keepdim=True) + 1.0)
        unit, d_new = _geometry(pos, index)
        rbf_d = rbf(d_new)
        e = e + self.edge_update(s, index, en, rbf_d)
        m = mask.to(s.dtype)
        return s * m[..., None], v * m[..., None, None], e, pos, (unit, rbf_d)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    ang = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], -1)


class EQGATDenoiser(nn.Module):
    """``forward(x_t, t, cond=None, *, capture=()) -> DenoiserOutput(MoleculePrediction, ...)``.

    ``capture`` takes ``"layer{k}"`` (1-based): the scalar atom features after layer k, (B,N,S), with the atom
    mask in ``DenoiserOutput.masks``.
    """

    def __init__(self, cfg: ModelConfig = MODEL_PRESETS["tiny"]) -> None:
        super().__init__()
        self.cfg = cfg
        S, E = cfg.scalars, cfg.edges
        self.atom_embed = nn.Embedding(len(ELEMENTS), S)
        self.charge_embed = nn.Embedding(len(CHARGES), S)
        self.time_mlp = _mlp(64, S, S)
        self.bond_embed = nn.Embedding(4, E)
        self.rbf = GaussianRBF(cfg.rbf, cfg.rbf_max)
        self.layers = nn.ModuleList(EQGATLayer(cfg) for _ in range(cfg.layers))
        self.atom_head = _mlp(S, S, len(ELEMENTS))
        self.charge_head = _mlp(S, S, len(CHARGES))
        self.bond_head = PairMLP(S, (E, cfg.rbf), E, 4, symmetric=True)
        self.norm_out = nn.LayerNorm(S)

    def forward(self, x_t: MoleculeBatch, t: torch.Tensor, cond: Any = None, *, capture=()) -> DenoiserOutput:
        mask, pair_mask = x_t.mask, x_t.pair_mask
        B, N = mask.shape
        dtype = x_t.pos.dtype
        s = self.atom_embed(x_t.atoms) + self.charge_embed(x_t.charges) + self.time_mlp(time_embedding(t.to(dtype), 64))[:, None]
        s = s * mask[..., None].to(dtype)
        v = torch.zeros(B, N, 3, self.cfg.vectors, dtype=dtype, device=s.device)
        index = Pairs.of(pair_mask)
        e = self.bond_embed(x_t.bonds.flatten().index_select(0, index.flat))
        pos = remove_com(x_t.pos, mask)
        hiddens, masks = {}, {}
        unit, d = _geometry(pos, index)
        geom = (unit, self.rbf(d))
        for k, layer in enumerate(self.layers, start=1):
            s, v, e, pos, geom = layer(s, v, e, pos, geom, mask, index, self.rbf)
            name = f"layer{k}"
            if name in capture:
                hiddens[name], masks[name] = s, mask
        sn = self.norm_out(s)
        bond_logits = index.dense(self.bond_head(sn, index, e, geom[1]))  # 0 on padded pairs
        bond_logits = 0.5 * (bond_logits + bond_logits.transpose(1, 2))  # exact symmetry despite rounding
        pred = MoleculePrediction(pos=pos, atom_logits=self.atom_head(sn), charge_logits=self.charge_head(sn),
                                  bond_logits=bond_logits)
        unknown = set(capture) - set(hiddens)
        if unknown:
            raise KeyError(f"unknown capture layers {sorted(unknown)}; have layer1..layer{len(self.layers)}")
        return DenoiserOutput(pred, hiddens, masks)
