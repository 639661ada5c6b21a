"""Chemistry helpers shared by data loading, teachers, I/O and metrics: EDM's distance-based bond orders and
RDKit molecule building / SMILES (RDKit is imported lazily and its logging silenced)."""

from __future__ import annotations

import numpy as np

from .constants import SYMBOLS, THRESHOLD_DOUBLE, THRESHOLD_SINGLE, THRESHOLD_TRIPLE


def pairwise_distances(positions: np.ndarray) -> np.ndarray:
    """(B,N,3) -> (B,N,N) Euclidean distances in float32 (as EDM computes them)."""
    p = np.asarray(positions, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates give inf, which the callers handle
        diff = p[:, :, None, :] - p[:, None, :, :]
        return np.sqrt((diff * diff).sum(-1))


def edm_bond_orders(positions: np.ndarray, atom_types: np.ndarray, mask: np.ndarray,
                    distances: np.ndarray | None = None) -> np.ndarray:
    """EDM's distance-based bond orders (0-3) for every atom pair, (B,N,N) int, zero on the diagonal/padding;
    ``distances`` the (B,N,N) ``pairwise_distances`` of ``positions`` when the caller has them already."""
    types = np.where(mask, atom_types, 0)
    d = 100.0 * (pairwise_distances(positions) if distances is None else distances)  # pm
    ti, tj = types[:, :, None], types[:, None, :]
    single = d < THRESHOLD_SINGLE[ti, tj]
    double = single & (d < THRESHOLD_DOUBLE[ti, tj])
    triple = double & (d < THRESHOLD_TRIPLE[ti, tj])
    order = single.astype(np.int64) + double + triple
    pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)[None]
    return np.where(pair, order, 0)


def _rdkit():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem


def build_mol(atom_types: np.ndarray, bond_orders: np.ndarray, charges: np.ndarray | None = None,
              positions: np.ndarray | None = None):
    """An RDKit RWMol from element indices (n,) into ``SYMBOLS``, a bond-order matrix (n,n) and optional charges/positions."""
    Chem = _rdkit()
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    for k, a in enumerate(atom_types):
        atom = Chem.Atom(SYMBOLS[int(a)])
        if charges is not None and charges[k]:
            atom.SetFormalCharge(int(charges[k]))
        mol.AddAtom(atom)
    ii, jj = np.nonzero(np.triu(bond_orders, 1))
    for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
        mol.AddBond(i, j, kinds[int(bond_orders[i, j])])
    if positions is not None:
        conf = Chem.Conformer(len(atom_types))
        for k, p in enumerate(np.asarray(positions, dtype=np.float64)):
            conf.SetAtomPosition(k, p.tolist())
        mol.AddConformer(conf, assignId=True)
    return mol


def mol_to_smiles(mol) -> str | None:
    """EDM's ``mol2smiles``: sanitise, then canonical SMILES; None when RDKit rejects the molecule."""
    Chem = _rdkit()
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    return Chem.MolToSmiles(mol)


def largest_fragment_smiles(mol) -> str | None:
    """EDM validity: the whole molecule must sanitise; the SMILES of its largest fragment is returned (EDM
    sanitises and writes the whole molecule first; one sanitisation and no whole-molecule SMILES give the same
    answer, twice as fast)."""
    Chem = _rdkit()
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    if len(Chem.GetMolFrags(mol)) == 1:
        return Chem.MolToSmiles(mol)
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return mol_to_smiles(max(frags, key=lambda m: m.GetNumAtoms()))
