"""Molecule metrics: EDM's stability / validity / uniqueness / novelty, bond-aware stability and connected
validity from predicted bonds and charges, a geometry sanity check, and MMFF94 energy, strain and optimisation
RMSD via RDKit.

Inputs are padded arrays: ``positions`` (B,N,3) in Å, ``atom_types`` (B,N) element indices into ``SYMBOLS``
(H, C, N, O, F first, as the model's ``ELEMENTS``; then the rest of the periodic table), ``mask`` (B,N) True for
real atoms. EDM stability is defined for H, C, N, O, F only: a molecule with another element counts as "n/a" and
is left out of both stability means. Distance-based bond orders, valences and the geometry check run on the whole
batch at once; RDKit runs once per molecule (sanitisation has no batched form).

Geometry sanity: EDM's validity sanitises the largest distance-bonded fragment, so a molecule blown up to 1e20 Å
(single atoms, each "valid") or collapsed onto one point would pass. A molecule is counted valid only when its
geometry is plausible: no two atoms on one point (< 0.01 Å apart) and some pair within 1.5x their covalent radii
sum (one bond at least). A given (model or file) bond longer than 1.5x that sum makes the molecule not connected-
valid; EDM's distance-based validity ignores given bonds, so it does too. The check is deliberately
loose: G-SchNet's published samples hold atoms 0.07 Å apart that EDM counts valid, and the EDM golden values
(QM9 test split, G-SchNet) are unchanged by it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from .chem import _rdkit, build_mol, edm_bond_orders, largest_fragment_smiles, pairwise_distances
from .constants import ELEMENTS, SYMBOLS, VALENCE

__all__ = ["GEOMETRY_PROBLEMS", "EnergyReport", "MetricReport", "MoleculeResults", "atom_stability", "edm_metrics",
           "edm_stability", "evaluate_batch", "evaluate_records", "geometry_check", "mmff_energies", "size_batches",
           "stability_defined", "stability_rates", "summarise"]

GEOMETRY_PROBLEMS = ("ok", "atoms on top of each other", "no two atoms within bonding distance", "over-long bond")
CLOSE = 0.01  # Å: two atoms on one point
FAR = 1.5  # x the covalent radii sum: a bond, or the nearest neighbour, farther than this is no bond


def atom_stability(atom_types: np.ndarray, bond_orders: np.ndarray, mask: np.ndarray,
                   charges: np.ndarray | None = None) -> np.ndarray:
    """(B,N) bool: valence (sum of bond orders) equals the element's valence (+ formal charge for N/O/C
    when ``charges`` is given: N+ 4, O+ 3, O- 1, C- 3, N- 2). False for elements other than H, C, N, O, F."""
    valence = bond_orders.sum(-1)
    base = VALENCE[np.where(mask, atom_types, 0)]
    expected = base
    if charges is not None:
        # a formal charge q changes the valence of N/O/C by +q (cations) or -|q| ... as in RDKit's defaults
        expected = base + np.where(np.isin(atom_types, (2, 3)), charges, -np.abs(charges))
    return (valence == expected) & mask & (base >= 0)


def stability_defined(atom_types: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) bool: every real atom is H, C, N, O or F (EDM stability is defined)."""
    return ((atom_types < len(ELEMENTS)) | ~mask).all(1)


def stability_rates(num_atoms: np.ndarray, atoms_stable: np.ndarray, defined: np.ndarray
                    ) -> tuple[float | None, float | None]:
    """EDM's atom and molecule stability (%) from per-molecule atom counts and stable-atom counts, over the molecules
    where it is ``defined``; (None, None) when there are none."""
    if not defined.any():
        return None, None
    atoms = int(num_atoms[defined].sum())
    return (100.0 * float(atoms_stable[defined].sum() / max(atoms, 1)),
            100.0 * float((atoms_stable[defined] == num_atoms[defined]).mean()))


def edm_stability(positions: np.ndarray, atom_types: np.ndarray, mask: np.ndarray) -> tuple[float | None, float | None, int]:
    """EDM's atom and molecule stability (%) of a padded batch and the number of molecules they count: the same
    figures as ``summarise(evaluate_batch(...))`` from distance-based bond orders alone, numpy only (no RDKit, so a
    training run can score its own samples where only torch is installed). Molecules with elements other than H, C,
    N, O, F are left out; (None, None, 0) when none is left."""
    positions, atom_types, mask = np.asarray(positions), np.asarray(atom_types), np.asarray(mask, dtype=bool)
    defined = stability_defined(atom_types, mask)
    stable = atom_stability(atom_types, edm_bond_orders(positions, atom_types, mask), mask).sum(1)
    return (*stability_rates(mask.sum(1), stable, defined), int(defined.sum()))


@functools.cache
def _covalent_radii() -> np.ndarray:
    pt = _rdkit().GetPeriodicTable()
    return np.array([pt.GetRcovalent(s) for s in SYMBOLS], np.float32)


def geometry_check(distances: np.ndarray, atom_types: np.ndarray, mask: np.ndarray,
                   bonds: np.ndarray | None = None) -> np.ndarray:
    """(B,) int8 index into ``GEOMETRY_PROBLEMS`` (0 = plausible) from ``pairwise_distances`` (B,N,N): two atoms
    closer than ``CLOSE`` Å, no pair within ``FAR`` x their covalent radii sum, or a given bond longer than that."""
    d = distances
    r = _covalent_radii()[np.where(mask, atom_types, 0)]
    ratio = d / (r[:, :, None] + r[:, None, :])
    pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)[None]
    out = np.zeros(len(mask), np.int8)
    if bonds is not None:
        out[((bonds > 0) & pair & (ratio > FAR)).any((1, 2))] = 3
    out[~((ratio <= FAR) & pair).any((1, 2)) & (mask.sum(1) > 1)] = 2
    out[((d < CLOSE) & pair).any((1, 2))] = 1
    return out


@dataclass(frozen=True)
class MoleculeResults:
    """Per-molecule outcomes of a batch (concatenate batches with ``MoleculeResults.concat``)."""

    num_atoms: np.ndarray  # (B,) int
    defined: np.ndarray  # (B,) bool: EDM stability is defined (only H, C, N, O, F)
    atoms_stable: np.ndarray  # (B,) int: atoms with EDM's valence (0 where undefined)
    geometry: np.ndarray  # (B,) int8 index into GEOMETRY_PROBLEMS
    smiles: np.ndarray  # (B,) object: EDM's largest-fragment SMILES when valid, else None
    bond_atoms_stable: np.ndarray | None = None  # (B,) int, from the model's own bonds and charges
    connected: np.ndarray | None = None  # (B,) bool: the given bond graph sanitises as one fragment

    @property
    def mol_stable(self) -> np.ndarray:
        return self.defined & (self.atoms_stable == self.num_atoms)

    def take(self, order: np.ndarray) -> MoleculeResults:
        return MoleculeResults(**{f.name: None if (v := getattr(self, f.name)) is None else v[order] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[MoleculeResults]) -> MoleculeResults:
        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return MoleculeResults(**{f.name: cat(f.name) for f in fields(MoleculeResults)})


def evaluate_batch(positions: np.ndarray, atom_types: np.ndarray, mask: np.ndarray, bonds: np.ndarray | None = None,
                   charges: np.ndarray | None = None) -> MoleculeResults:
    """Every per-molecule outcome of one padded batch; bonds (B,N,N) and charges (B,N) are the model's or the
    file's own, for the bond-aware metrics."""
    positions, atom_types, mask = np.asarray(positions), np.asarray(atom_types), np.asarray(mask, dtype=bool)
    d = pairwise_distances(positions)
    orders = edm_bond_orders(positions, atom_types, mask, d)
    defined = stability_defined(atom_types, mask)
    stable = atom_stability(atom_types, orders, mask).sum(1)
    if bonds is not None:
        bonds = np.where(mask[:, :, None] & mask[:, None, :], bonds, 0)
    geometry = geometry_check(d, atom_types, mask, bonds)
    smiles = np.full(len(mask), None, dtype=object)
    for b in np.nonzero((geometry == 0) | (geometry == 3))[0]:  # given bonds do not enter EDM validity
        k = int(mask[b].sum())
        smiles[b] = largest_fragment_smiles(build_mol(atom_types[b, :k], orders[b, :k, :k]))
    extra = {}
    if bonds is not None:
        extra = _bond_aware(atom_types, bonds, mask, charges, geometry == 0)
    return MoleculeResults(mask.sum(1), defined, np.where(defined, stable, 0), geometry, smiles, **extra)


def evaluate_records(records: Sequence, max_pairs: int = 2_000_000) -> MoleculeResults:
    """``evaluate_batch`` over ``io.Record`` s of any sizes, in batches of similar size (at most ``max_pairs`` padded
    atom pairs each, so a few large molecules cost no padding elsewhere); results in record order."""
    from .io import pad

    parts, order = [], []
    for idx in size_batches([len(r.types) for r in records], max_pairs):
        arr = pad([records[k] for k in idx])
        parts.append(evaluate_batch(arr["pos"], arr["atoms"], arr["mask"], arr.get("bonds"), arr.get("charges")))
        order.extend(idx.tolist())
    return MoleculeResults.concat(parts).take(np.argsort(np.asarray(order, dtype=np.int64), kind="stable"))


def size_batches(sizes: Sequence[int], max_pairs: int = 2_000_000) -> Iterable[np.ndarray]:
    """Indices of molecules with ``sizes`` atoms in batches of similar size, each padding to at most ``max_pairs``
    atom pairs (one molecule at least), smallest first."""
    sizes = np.asarray(sizes)
    order = np.argsort(sizes, kind="stable")
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and (j + 1 - i) * sizes[order[j]] ** 2 <= max_pairs:
            j += 1
        yield order[i:j]
        i = j


def _bond_aware(atom_types, bonds, mask, charges, plausible) -> dict[str, np.ndarray]:
    Chem = _rdkit()
    stable = atom_stability(atom_types, bonds, mask, charges).sum(1)
    connected = np.zeros(len(mask), bool)
    for b in np.nonzero(plausible)[0]:
        k = int(mask[b].sum())
        mol = build_mol(atom_types[b, :k], bonds[b, :k, :k], None if charges is None else charges[b, :k])
        try:
            Chem.SanitizeMol(mol)
        except (ValueError, RuntimeError):
            continue
        connected[b] = len(Chem.GetMolFrags(mol)) == 1
    return {"bond_atoms_stable": stable, "connected": connected}


@dataclass(frozen=True)
class MetricReport:
    """Every metric in percent (0-100) except counts; ``None`` where it is undefined."""

    n: int
    atom_stable: float | None
    mol_stable: float | None
    validity: float
    uniqueness: float | None
    valid_unique: float
    novelty: float | None
    bond_atom_stable: float | None = None
    bond_mol_stable: float | None = None
    connected_validity: float | None = None
    n_stability: int | None = None  # molecules with EDM stability defined (only H, C, N, O, F)
    n_implausible: int = 0  # molecules whose geometry failed the sanity check (never valid)
    n_long_bonds: int | None = None  # molecules with a given bond longer than 1.5x the covalent radii sum

    def rows(self) -> list[tuple[str, str]]:
        def fmt(v):
            return "-" if v is None else f"{v:.2f}"

        stab = "" if self.n_stability in (None, self.n) else f" (of {self.n_stability})"
        return [
            ("molecules", str(self.n)),
            (f"atom stability %{stab}", fmt(self.atom_stable) if self.n_stability != 0 else "n/a"),
            (f"molecule stability %{stab}", fmt(self.mol_stable) if self.n_stability != 0 else "n/a"),
            ("validity %", fmt(self.validity)),
            ("uniqueness %", fmt(self.uniqueness)),
            ("valid x unique %", fmt(self.valid_unique)),
            ("novelty %", fmt(self.novelty)),
            ("bond-aware atom stability %", fmt(self.bond_atom_stable)),
            ("bond-aware molecule stability %", fmt(self.bond_mol_stable)),
            ("connected validity %", fmt(self.connected_validity)),
            ("implausible geometry", str(self.n_implausible)),
            ("over-long given bonds", "-" if self.n_long_bonds is None else str(self.n_long_bonds)),
        ]

    def table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>8}" for k, v in rows)


def summarise(res: MoleculeResults, training_smiles: Iterable[str] | None = None) -> MetricReport:
    """The report of per-molecule results; novelty against ``training_smiles`` when given."""
    n = len(res.num_atoms)
    valid = [s for s in res.smiles if s is not None]
    unique = set(valid)
    novelty = None
    if training_smiles is not None and unique:
        train = training_smiles if isinstance(training_smiles, (set, frozenset)) else set(training_smiles)
        novelty = 100.0 * sum(s not in train for s in unique) / len(unique)
    extra = {}
    if res.bond_atoms_stable is not None:
        bond_atom, bond_mol = stability_rates(res.num_atoms, res.bond_atoms_stable, res.defined)
        extra = {"bond_atom_stable": bond_atom, "bond_mol_stable": bond_mol,
                 "connected_validity": 100.0 * float(res.connected.sum()) / max(n, 1)}
    atom_stable, mol_stable = stability_rates(res.num_atoms, res.atoms_stable, res.defined)
    return MetricReport(
        n=n,
        atom_stable=atom_stable,
        mol_stable=mol_stable,
        validity=100.0 * len(valid) / max(n, 1),
        uniqueness=100.0 * len(unique) / len(valid) if valid else None,
        valid_unique=100.0 * len(unique) / max(n, 1),
        novelty=novelty,
        n_stability=int(res.defined.sum()),
        n_implausible=int(((res.geometry == 1) | (res.geometry == 2)).sum()),
        n_long_bonds=None if res.connected is None else int((res.geometry == 3).sum()),
        **extra,
    )


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
    return summarise(evaluate_batch(positions, atom_types, mask, bonds, charges), training_smiles)


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
