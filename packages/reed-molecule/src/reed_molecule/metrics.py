"""Molecule metrics: EDM's stability / validity / uniqueness / novelty, bond-aware stability and connected
validity from predicted bonds and charges, and MMFF94 energy, strain and optimisation RMSD via RDKit.

Inputs are padded arrays: ``positions`` (B,N,3) in Å, ``atom_types`` (B,N) element indices into
``ELEMENTS`` (H, C, N, O, F), ``mask`` (B,N) True for real atoms. Distance-based bond orders and valences are
computed for the whole batch at once; RDKit runs once per molecule (sanitisation has no batched form).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .chem import _rdkit, build_mol, edm_bond_orders, largest_fragment_smiles, mol_to_smiles
from .constants import VALENCE

__all__ = ["EnergyReport", "MetricReport", "StabilityResult", "atom_stability", "bond_aware_metrics", "edm_metrics",
           "mmff_energies", "stability"]


def atom_stability(atom_types: np.ndarray, bond_orders: np.ndarray, mask: np.ndarray,
                   charges: np.ndarray | None = None) -> np.ndarray:
    """(B,N) bool: valence (sum of bond orders) equals the element's valence (+ formal charge for N/O/C
    when ``charges`` is given: N+ 4, O+ 3, O- 1, C- 3, N- 2)."""
    valence = bond_orders.sum(-1)
    expected = VALENCE[np.where(mask, atom_types, 0)]
    if charges is not None:
        # a formal charge q changes the valence of N/O/C by +q (cations) or -|q| ... as in RDKit's defaults
        expected = expected + np.where(np.isin(atom_types, (2, 3)), charges, -np.abs(charges))
    return (valence == expected) & mask


@dataclass(frozen=True)
class StabilityResult:
    atom_stable: float
    mol_stable: float
    per_molecule: np.ndarray  # (B,) bool


def stability(positions: np.ndarray, atom_types: np.ndarray, mask: np.ndarray) -> StabilityResult:
    """EDM atom stability (fraction of real atoms with the right valence) and molecule stability."""
    orders = edm_bond_orders(positions, atom_types, mask)
    stable = atom_stability(atom_types, orders, mask)
    per_mol = stable.sum(1) == mask.sum(1)
    return StabilityResult(float(stable.sum() / max(mask.sum(), 1)), float(per_mol.mean()), per_mol)


@dataclass(frozen=True)
class MetricReport:
    """Every metric in percent (0-100) except counts; ``None`` where it is undefined."""

    n: int
    atom_stable: float
    mol_stable: float
    validity: float
    uniqueness: float | None
    valid_unique: float
    novelty: float | None
    bond_atom_stable: float | None = None
    bond_mol_stable: float | None = None
    connected_validity: float | None = None

    def rows(self) -> list[tuple[str, str]]:
        def fmt(v):
            return "-" if v is None else f"{v:.2f}"

        return [
            ("molecules", str(self.n)),
            ("atom stability %", fmt(self.atom_stable)),
            ("molecule stability %", fmt(self.mol_stable)),
            ("validity %", fmt(self.validity)),
            ("uniqueness %", fmt(self.uniqueness)),
            ("valid x unique %", fmt(self.valid_unique)),
            ("novelty %", fmt(self.novelty)),
            ("bond-aware atom stability %", fmt(self.bond_atom_stable)),
            ("bond-aware molecule stability %", fmt(self.bond_mol_stable)),
            ("connected validity %", fmt(self.connected_validity)),
        ]

    def table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>8}" for k, v in rows)


def edm_metrics(
    positions: np.ndarray,
    atom_types: np.ndarray,
    mask: np.ndarray,
    training_smiles: Iterable[str] | None = None,
    bonds: np.ndarray | None = None,
    charges: np.ndarray | None = None,
) -> MetricReport:
    """EDM's metrics on a padded batch, plus bond-aware ones when predicted ``bonds`` (B,N,N) orders and
    ``charges`` (B,N) formal charges are given."""
    positions, atom_types, mask = np.asarray(positions), np.asarray(atom_types), np.asarray(mask, dtype=bool)
    n = positions.shape[0]
    stab = stability(positions, atom_types, mask)
    orders = edm_bond_orders(positions, atom_types, mask)
    valid: list[str] = []
    for b in range(n):
        k = int(mask[b].sum())
        mol = build_mol(atom_types[b, :k], orders[b, :k, :k])
        smi = largest_fragment_smiles(mol)
        if smi is not None:
            valid.append(smi)
    unique = set(valid)
    uniqueness = 100.0 * len(unique) / len(valid) if valid else None
    novelty = None
    if training_smiles is not None and unique:
        train = training_smiles if isinstance(training_smiles, (set, frozenset)) else set(training_smiles)
        novelty = 100.0 * sum(s not in train for s in unique) / len(unique)
    extra = {}
    if bonds is not None:
        extra = bond_aware_metrics(atom_types, bonds, mask, charges)
    return MetricReport(
        n=n,
        atom_stable=100.0 * stab.atom_stable,
        mol_stable=100.0 * stab.mol_stable,
        validity=100.0 * len(valid) / max(n, 1),
        uniqueness=uniqueness,
        valid_unique=100.0 * len(unique) / max(n, 1),
        novelty=novelty,
        **extra,
    )


def bond_aware_metrics(atom_types: np.ndarray, bonds: np.ndarray, mask: np.ndarray,
                       charges: np.ndarray | None = None) -> dict[str, float]:
    """Stability from the model's own bonds and charges, and connected validity (the whole molecule
    sanitises and is one fragment)."""
    Chem = _rdkit()
    bonds = np.where(mask[:, :, None] & mask[:, None, :], bonds, 0)
    stable = atom_stability(atom_types, bonds, mask, charges)
    per_mol = stable.sum(1) == mask.sum(1)
    connected = 0
    for b in range(len(atom_types)):
        k = int(mask[b].sum())
        mol = build_mol(atom_types[b, :k], bonds[b, :k, :k], None if charges is None else charges[b, :k])
        if mol_to_smiles(mol) is not None and len(Chem.GetMolFrags(mol)) == 1:
            connected += 1
    return {
        "bond_atom_stable": 100.0 * float(stable.sum() / max(mask.sum(), 1)),
        "bond_mol_stable": 100.0 * float(per_mol.mean()),
        "connected_validity": 100.0 * connected / max(len(atom_types), 1),
    }


@dataclass(frozen=True)
class EnergyReport:
    n_scored: int
    energy_mean: float  # MMFF94 energy of the generated geometry (kcal/mol)
    strain_mean: float  # energy minus the energy after MMFF94 optimisation (kcal/mol)
    strain_median: float
    rmsd_mean: float  # heavy-atom RMSD between generated and optimised geometry (Å)
    n_failed: int = 0  # molecules whose MMFF94 energy is not finite (e.g. atoms on top of each other): not scored


def mmff_energies(mols: Sequence, max_iters: int = 500) -> EnergyReport | None:
    """MMFF94 energy, strain and optimisation RMSD for sanitisable molecules with a conformer."""
    Chem = _rdkit()
    from rdkit.Chem import AllChem, rdMolAlign

    energies, strains, rmsds, failed = [], [], [], 0
    for mol in mols:
        if mol is None or mol.GetNumConformers() == 0:
            continue
        m = Chem.Mol(mol)
        try:
            Chem.SanitizeMol(m)
        except (ValueError, RuntimeError):
            continue
        props = AllChem.MMFFGetMoleculeProperties(m)
        if props is None:
            continue
        ff = AllChem.MMFFGetMoleculeForceField(m, props)
        if ff is None:
            continue
        e0 = ff.CalcEnergy()
        ref = Chem.Mol(m)
        ff.Minimize(maxIts=max_iters)
        e1 = ff.CalcEnergy()
        if not (np.isfinite(e0) and np.isfinite(e1)):
            failed += 1
            continue
        heavy = Chem.RemoveHs(m, sanitize=False)
        heavy_ref = Chem.RemoveHs(ref, sanitize=False)
        try:
            rmsd = rdMolAlign.AlignMol(heavy, heavy_ref) if heavy.GetNumAtoms() > 1 else 0.0
        except RuntimeError:
            rmsd = float("nan")
        energies.append(e0)
        strains.append(e0 - e1)
        rmsds.append(rmsd)
    if not energies:
        return None if not failed else EnergyReport(0, math.nan, math.nan, math.nan, math.nan, failed)
    rmsd = float(np.nanmean(rmsds)) if np.isfinite(rmsds).any() else math.nan
    return EnergyReport(len(energies), float(np.mean(energies)), float(np.mean(strains)),
                        float(np.median(strains)), rmsd, failed)
