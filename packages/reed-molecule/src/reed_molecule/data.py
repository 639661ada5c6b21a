"""Batches of molecules for training: padded dense tensors with an atom mask, zero centre of mass."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .constants import CHARGE_TO_INDEX, CHARGES
from .qm9 import build_graphs, edm_split, molecules

MAX_ATOMS = 29


@dataclass(frozen=True)
class MoleculeBatch:
    """A padded batch. ``pos`` (B,N,3) Å with zero centre of mass over real atoms; ``atoms`` (B,N) element
    index; ``charges`` (B,N) charge-class index into ``CHARGES``; ``bonds`` (B,N,N) symmetric bond order
    0-3; ``mask`` (B,N) True for real atoms; ``index`` (B,) dataset index (-1 when unknown)."""

    pos: torch.Tensor
    atoms: torch.Tensor
    charges: torch.Tensor
    bonds: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.pos.shape[0])

    @property
    def device(self) -> torch.device:
        return self.pos.device

    @property
    def pair_mask(self) -> torch.Tensor:
        """(B,N,N) True for pairs of distinct real atoms."""
        n = self.mask.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=self.mask.device)
        return self.mask[:, :, None] & self.mask[:, None, :] & ~eye

    def to(self, device) -> MoleculeBatch:
        return MoleculeBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def with_(self, **kw) -> MoleculeBatch:
        return replace(self, **kw)

    def numpy(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}


def remove_com(pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract the centre of mass of the real atoms; padded atoms are set to 0."""
    m = mask.to(pos.dtype)[..., None]
    com = (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
    return (pos - com) * m


class QM9Dataset:
    """A split of the rebuilt QM9 graphs (molecules without a valence-exact bond graph are dropped), from the RDKit
    build in the cache directory or, with ``pack``, from the compact training pack (``reed_molecule.pack``).

    Implements ``reed_core.TrainingData``: items are positions in the split, uniformly sampled; a training batch
    holds whole molecules (no crop), so ``whole`` is ``collate`` and every row's window starts at atom 0."""

    weights = None

    def __init__(self, split: str, cache: str | os.PathLike | None = None, progress: bool = True,
                 limit: int | None = None, pack: str | os.PathLike | None = None) -> None:
        self.graph2d = None  # raw 2-D teacher features by row, from a training pack (else computed with RDKit)
        if pack is not None:  # the compact training pack: numpy only, no RDKit
            from .pack import read_pack, unpack

            self.all, graphs, self.graph2d = unpack(read_pack(pack))
        else:
            graphs = build_graphs(cache, progress)
            self.all = molecules(None, cache, progress)
        ids = edm_split()[split]
        ids = ids[graphs["keep"][ids]]
        if limit is not None:
            ids = ids[:limit]
        self.split, self.ids = split, ids
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return self.all.num_atoms[self.ids]

    def whole(self, positions: np.ndarray) -> MoleculeBatch:
        return self.collate(positions)

    def window(self, x0: MoleculeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(x0.batch_size, dtype=torch.long), x0.mask

    def atom_count_histogram(self) -> np.ndarray:
        return np.bincount(self.all.num_atoms[self.ids], minlength=MAX_ATOMS + 1)

    def marginals(self) -> dict[str, np.ndarray]:
        """Empirical marginals of atom types, charge classes and bond orders (over atom pairs)."""
        atoms, charges = [], []
        pairs, bond_counts = 0, np.zeros(4)
        for m in self.ids:
            lo, hi = self.all.offsets[m], self.all.offsets[m + 1]
            atoms.append(self.all.atom_types[lo:hi])
            charges.append(self.graphs["charges"][lo:hi])
            n = hi - lo
            pairs += n * (n - 1) // 2
            e = self.graphs["edges"][self.graphs["edge_offsets"][m]:self.graphs["edge_offsets"][m + 1]]
            bond_counts += np.bincount(e[:, 2], minlength=4)
        bond_counts[0] = pairs - bond_counts[1:].sum()
        a = np.bincount(np.concatenate(atoms), minlength=5).astype(float)
        q = np.bincount(np.concatenate(charges).astype(int) + 1, minlength=len(CHARGES)).astype(float)
        return {"atoms": a / a.sum(), "charges": q / q.sum(), "bonds": bond_counts / bond_counts.sum()}

    def collate(self, positions: np.ndarray) -> MoleculeBatch:
        """Batch of the molecules at ``positions`` (indices into this split)."""
        ids = self.ids[np.asarray(positions)]
        pos, atoms, mask = self.all.padded(ids, MAX_ATOMS)
        n = MAX_ATOMS
        charges = np.full((len(ids), n), CHARGE_TO_INDEX[0], np.int64)
        bonds = np.zeros((len(ids), n, n), np.int64)
        for b, m in enumerate(ids):
            lo, hi = self.all.offsets[m], self.all.offsets[m + 1]
            charges[b, : hi - lo] = self.graphs["charges"][lo:hi].astype(np.int64) + 1
            e = self.graphs["edges"][self.graphs["edge_offsets"][m]:self.graphs["edge_offsets"][m + 1]].astype(np.int64)
            bonds[b, e[:, 0], e[:, 1]] = e[:, 2]
            bonds[b, e[:, 1], e[:, 0]] = e[:, 2]
        mask_t = torch.from_numpy(mask)
        return MoleculeBatch(
            pos=remove_com(torch.from_numpy(pos), mask_t),
            atoms=torch.from_numpy(atoms),
            charges=torch.from_numpy(charges),
            bonds=torch.from_numpy(bonds),
            mask=mask_t,
            index=torch.from_numpy(ids.astype(np.int64)),
        )
