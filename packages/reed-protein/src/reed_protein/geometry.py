"""Backbone geometry, vectorised over padded batches: dihedrals, DSSP-style hydrogen bonds and secondary
structure, and trRosetta-style inter-residue orientations at kNN edges."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .features import gather_nodes, virtual_cb

HB_CUTOFF = -0.5  # kcal/mol, DSSP's H-bond threshold


def dihedral(p0, p1, p2, p3) -> torch.Tensor:
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = F.normalize(b1, dim=-1)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    x = (v * w).sum(-1)
    y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def angle(p0, p1, p2) -> torch.Tensor:
    a, b = F.normalize(p0 - p1, dim=-1), F.normalize(p2 - p1, dim=-1)
    return torch.acos((a * b).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6))


def backbone_dihedrals(X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi, psi, omega (B,L,3) and their validity mask (B,L,3) (neighbours present and bonded)."""
    n, ca, c = X[:, :, 0], X[:, :, 1], X[:, :, 2]
    prev_c = torch.roll(c, 1, 1)
    next_n, next_ca = torch.roll(n, -1, 1), torch.roll(ca, -1, 1)
    bonded_prev = torch.roll(mask, 1, 1) & mask & ((n - prev_c).norm(dim=-1) < 2.0)
    bonded_prev[:, 0] = False
    bonded_next = torch.roll(bonded_prev, -1, 1)
    bonded_next[:, -1] = False
    phi = dihedral(prev_c, n, ca, c)
    psi = dihedral(n, ca, c, next_n)
    omega = dihedral(ca, c, next_n, next_ca)
    valid = torch.stack([bonded_prev, bonded_next, bonded_next], -1)
    return torch.stack([phi, psi, omega], -1) * valid, valid


def hbond_energy(X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DSSP electrostatic H-bond energy E[b, i, j] (kcal/mol) of donor N-H of residue i to acceptor C=O of
    residue j; 0 where undefined (missing residues, i == j, |i - j| < 2, first residue without a previous)."""
    n, c, o = X[:, :, 0], X[:, :, 2], X[:, :, 3]
    prev_c, prev_o = torch.roll(c, 1, 1), torch.roll(o, 1, 1)
    h = n + F.normalize(prev_c - prev_o, dim=-1)  # DSSP's hydrogen placement
    def dist(a, b):
        return torch.cdist(a, b).clamp_min(0.5)
    e = 0.084 * 332.0 * (1 / dist(n, o) + 1 / dist(h, c) - 1 / dist(h, o) - 1 / dist(n, c))
    L = X.shape[1]
    idx = torch.arange(L, device=X.device)
    sep = (idx[:, None] - idx[None, :]).abs() >= 2
    has_prev = torch.roll(mask, 1, 1)
    has_prev[:, 0] = False
    ok = (mask & has_prev)[:, :, None] & mask[:, None, :] & sep[None]
    return torch.where(ok, e.clamp(min=-9.9), torch.zeros_like(e))


def secondary_structure(X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """3-state DSSP (0 helix H/G/I, 1 strand E/B, 2 coil) per residue (B,L) from the H-bond matrix."""
    hb = hbond_energy(X, mask) < HB_CUTOFF  # hb[i, j]: NH(i) -> CO(j)
    B, L, _ = hb.shape
    idx = torch.arange(L, device=X.device)

    def pair(i_off, j_off):  # hb[i + i_off, j + j_off] as a (B,L,L) tensor aligned at (i, j)
        ii = (idx + i_off).clamp(0, L - 1)
        jj = (idx + j_off).clamp(0, L - 1)
        valid = ((idx + i_off) >= 0) & ((idx + i_off) < L)
        validj = ((idx + j_off) >= 0) & ((idx + j_off) < L)
        return hb[:, ii][:, :, jj] & valid[None, :, None] & validj[None, None, :]

    helix = torch.zeros(B, L, dtype=torch.bool, device=X.device)
    for n_turn in (4, 3, 5):
        # n-turn at i: CO(i) accepts from NH(i+n)
        ii = (idx + n_turn).clamp(max=L - 1)
        turn = hb[:, ii, idx] & ((idx + n_turn) < L)  # (B,L)
        start = turn & torch.roll(turn, 1, 1)
        start[:, 0] = False
        for k in range(1, n_turn + 1):
            helix |= torch.roll(start, k, 1) & (idx >= k)
    # bridges (i, j): antiparallel [hb(i,j) & hb(j,i)] | [hb(i+1,j-1) & hb(j+1,i-1)];
    # parallel [hb(i+1, j) & hb(j, i-1)] | [hb(j+1, i) & hb(i, j-1)]  (hb(a,b): NH(a) -> CO(b))
    hbT = hb.transpose(1, 2)
    anti = (hb & hbT) | (pair(1, -1) & pair(-1, 1).transpose(1, 2))
    par = (pair(1, 0) & pair(0, -1).transpose(1, 2)) | (pair(0, 1).transpose(1, 2) & pair(-1, 0))
    far = (idx[:, None] - idx[None, :]).abs() > 2
    strand = ((anti | par) & far).any(-1)
    ss = torch.full((B, L), 2, dtype=torch.long, device=X.device)
    ss = torch.where(strand, torch.ones_like(ss), ss)
    ss = torch.where(helix, torch.zeros_like(ss), ss)
    return torch.where(mask, ss, torch.full_like(ss, 2))


def edge_orientations(X: torch.Tensor, E_idx: torch.Tensor) -> torch.Tensor:
    """trRosetta orientations at the edges: CB-CB distance, omega, theta, phi -> (B,L,K,4) (angles in rad)."""
    cb = virtual_cb(X)
    ca, n = X[:, :, 1], X[:, :, 0]
    cb_j, ca_j = gather_nodes(cb, E_idx), gather_nodes(ca, E_idx)
    cb_i, ca_i, n_i = cb[:, :, None].expand_as(cb_j), ca[:, :, None].expand_as(cb_j), n[:, :, None].expand_as(cb_j)
    d = (cb_i - cb_j).norm(dim=-1)
    omega = dihedral(ca_i, cb_i, cb_j, ca_j)
    theta = dihedral(n_i, ca_i, cb_i, cb_j)
    phi = angle(ca_i, cb_i, cb_j)
    return torch.stack([d, omega, theta, phi], -1)
