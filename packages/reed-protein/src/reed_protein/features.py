"""ProteinMPNN's featurizer, vectorised over a padded batch of mixed lengths.

k nearest neighbours by C-alpha distance (padded / masked residues excluded), 25 backbone atom-pair distances
(N, CA, C, O and a virtual C-beta) each expanded in 16 Gaussian RBFs (2-22 Å), and a relative-position /
same-chain encoding (offsets clipped to +-32, a separate class for different chains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATOM_PAIRS = (  # (i-atom, j-atom) indices into (N, CA, C, O, CB); CA-CA first (ProteinMPNN's order)
    (1, 1), (0, 0), (2, 2), (3, 3), (4, 4), (1, 0), (1, 2), (1, 3), (1, 4), (0, 2), (0, 3), (0, 4), (4, 2),
    (4, 3), (3, 2), (0, 1), (2, 1), (3, 1), (4, 1), (2, 0), (3, 0), (4, 0), (2, 4), (3, 4), (2, 3),
)
NUM_RBF = 16
MAX_REL = 32


def virtual_cb(X: torch.Tensor) -> torch.Tensor:
    """Ideal C-beta from N, CA, C (ProteinMPNN's constants). X (...,4,3) -> (...,3)."""
    n, ca, c = X[..., 0, :], X[..., 1, :], X[..., 2, :]
    b = ca - n
    cc = c - ca
    a = torch.cross(b, cc, dim=-1)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca


def rbf(d: torch.Tensor, num: int = NUM_RBF, d_min: float = 2.0, d_max: float = 22.0) -> torch.Tensor:
    mu = torch.linspace(d_min, d_max, num, device=d.device, dtype=d.dtype)
    sigma = (d_max - d_min) / num
    return torch.exp(-(((d[..., None] - mu) / sigma) ** 2))


def gather_nodes(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B,L,...) and idx (B,L',K) -> (B,L',K,...): ``out[b, i, k] = x[b, idx[b, i, k]]``. A batch of 1 on either
    side is broadcast over the other's (one structure encoded once, decoded for many sequences).

    One ``index_select`` over the flattened rows: on CPU 10-15x faster forward and 2x faster forward + backward
    than ``torch.gather`` with an expanded index (B 8, L 100, K 30, H 128), the decoder's hot path."""
    B = max(x.shape[0], idx.shape[0])
    if x.shape[0] != B:
        x = x.expand(B, *x.shape[1:])
    _, L, K = idx.shape
    rows = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * x.shape[1]).reshape(-1)
    out = x.reshape(B * x.shape[1], *x.shape[2:]).index_select(0, rows)
    return out.view(B, L, K, *x.shape[2:])


def knn_graph(X: torch.Tensor, mask: torch.Tensor, k: int, block: int = 1 << 24
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbour indices E_idx (B,L,K) by CA distance, their distances (B,L,K) and an edge mask (B,L,K).

    Query rows go in blocks of at most ``block`` distances (64 MB in float32), so memory is O(B L K + block)
    instead of O(B L^2): a 20,000-residue complex needs tens of MB, not 1.6 GB. One block for training crops."""
    ca, (B, L) = X[:, :, 1], mask.shape
    k, rows = min(k, L), max(1, block // max(1, B * L))
    big = torch.finfo(ca.dtype).max / 4
    dist, idx = [], []
    for lo in range(0, L, rows):
        d = torch.cdist(ca[:, lo:lo + rows], ca)  # (B,rows,L)
        d = torch.where(mask[:, lo:lo + rows, None] & mask[:, None, :], d, big)
        dd, ii = torch.topk(d, k, dim=-1, largest=False)
        dist.append(dd)
        idx.append(ii)
    dist, idx = torch.cat(dist, 1), torch.cat(idx, 1)
    edge_mask = (dist < big / 2) & mask[:, :, None]
    return idx, dist, edge_mask


def backbone_atoms(X: torch.Tensor) -> torch.Tensor:
    """(B,L,5,3): N, CA, C, O, virtual CB."""
    return torch.cat([X, virtual_cb(X)[:, :, None]], dim=2)


def edge_distances(X: torch.Tensor, E_idx: torch.Tensor) -> torch.Tensor:
    """The 25 atom-pair distances at the kNN edges, (B,L,K,25)."""
    atoms = backbone_atoms(X)  # (B,L,5,3)
    nb = gather_nodes(atoms, E_idx)  # (B,L,K,5,3)
    ii = torch.tensor([p[0] for p in ATOM_PAIRS], device=X.device)
    jj = torch.tensor([p[1] for p in ATOM_PAIRS], device=X.device)
    a = atoms[:, :, None, ii]  # (B,L,1,25,3)
    b = nb[:, :, :, jj]  # (B,L,K,25,3)
    return torch.sqrt(((a - b) ** 2).sum(-1) + 1e-6)


def relative_position(residue_idx: torch.Tensor, chain_idx: torch.Tensor, E_idx: torch.Tensor) -> torch.Tensor:
    """Class index (B,L,K) in [0, 2*MAX_REL+1]: clipped offset, or 2*MAX_REL+1 for different chains."""
    off = residue_idx[:, :, None] - gather_nodes(residue_idx, E_idx)
    same = chain_idx[:, :, None] == gather_nodes(chain_idx, E_idx)
    cls = torch.clamp(off + MAX_REL, 0, 2 * MAX_REL)
    return torch.where(same, cls, torch.full_like(cls, 2 * MAX_REL + 1))


def featurize(X, mask, residue_idx, chain_idx, k: int):
    """(RBF distance features (B,L,K,25*16), relative-position classes (B,L,K), E_idx, edge_mask)."""
    E_idx, _, edge_mask = knn_graph(X, mask, k)
    d = edge_distances(X, E_idx)
    feats = rbf(d).flatten(-2)
    return feats, relative_position(residue_idx, chain_idx, E_idx), E_idx, edge_mask


def one_hot_rel(cls: torch.Tensor) -> torch.Tensor:
    return F.one_hot(cls, 2 * MAX_REL + 2).float()
