"""Reading and writing molecules as SDF (RDKit, 3-D coordinates, bonds, formal charges) or XYZ.

Readers validate every record and raise ``MoleculeFormatError`` naming the file and the record; writers go
through a temporary file and a rename, so a failure never leaves a partial output file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from reed_core.io import atomic_write

from .chem import build_mol
from .constants import ELEMENTS, SYMBOL_TO_INDEX
from .data import MAX_ATOMS


class MoleculeFormatError(ValueError):
    """A molecule file is malformed or holds something REED cannot model."""


def to_mols(arrays: dict[str, np.ndarray]):
    """RDKit molecules (unsanitised when RDKit rejects them) from padded arrays with bonds and charges."""
    mols = []
    for b in range(len(arrays["mask"])):
        n = int(arrays["mask"][b].sum())
        mol = build_mol(arrays["atoms"][b, :n], arrays["bonds"][b, :n, :n], arrays["charges"][b, :n], arrays["pos"][b, :n])
        mol.UpdatePropertyCache(strict=False)
        mols.append(mol)
    return mols


def write_molecules(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write padded molecule arrays to ``path`` (.sdf or .xyz, chosen by the suffix)."""
    from rdkit import Chem

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".sdf", ".xyz"):
        raise MoleculeFormatError(f"{path}: output must end in .sdf or .xyz")
    if suffix == ".xyz":
        blocks = []
        for b in range(len(arrays["mask"])):
            n = int(arrays["mask"][b].sum())
            lines = [str(n), f"reed-molecule sample {b}"]
            lines += [f"{ELEMENTS[int(a)]} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}"
                      for a, p in zip(arrays["atoms"][b, :n], arrays["pos"][b, :n], strict=True)]
            blocks.append("\n".join(lines) + "\n")
        atomic_write(path, "".join(blocks))
        return path
    parts = []
    for k, mol in enumerate(to_mols(arrays)):
        mol.SetProp("_Name", f"reed-molecule sample {k}")
        parts.append(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    atomic_write(path, "".join(parts))
    return path


def _finish(path: Path, records: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]):
    if not records:
        raise MoleculeFormatError(f"{path}: no molecules in file")
    n = max(len(r[0]) for r in records)
    B = len(records)
    out = {"pos": np.zeros((B, n, 3), np.float32), "atoms": np.zeros((B, n), np.int64),
           "mask": np.zeros((B, n), bool), "charges": np.zeros((B, n), np.int64), "bonds": np.zeros((B, n, n), np.int64)}
    has_bonds = all(r[2] is not None for r in records)
    for b, (types, pos, bonds, charges) in enumerate(records):
        k = len(types)
        out["pos"][b, :k], out["atoms"][b, :k], out["mask"][b, :k] = pos, types, True
        if bonds is not None:
            out["bonds"][b, :k, :k] = bonds
        if charges is not None:
            out["charges"][b, :k] = charges
    if not has_bonds:
        out.pop("bonds")
        out.pop("charges")
    return out


def _check(path: Path, k: int, symbols: list[str], pos: np.ndarray) -> np.ndarray:
    if len(symbols) < 2:
        raise MoleculeFormatError(f"{path}: record {k}: a molecule needs at least 2 atoms, got {len(symbols)}")
    if len(symbols) > MAX_ATOMS:
        raise MoleculeFormatError(f"{path}: record {k}: {len(symbols)} atoms; QM9 models take at most {MAX_ATOMS}")
    unknown = sorted({s for s in symbols if s not in SYMBOL_TO_INDEX})
    if unknown:
        raise MoleculeFormatError(f"{path}: record {k}: unknown element(s) {unknown}; expected one of {list(ELEMENTS)}")
    if not np.isfinite(pos).all():
        bad = int(np.nonzero(~np.isfinite(pos).all(1))[0][0]) + 1
        raise MoleculeFormatError(f"{path}: record {k}: atom {bad} has a non-finite coordinate")
    return np.array([SYMBOL_TO_INDEX[s] for s in symbols], np.int64)


def read_molecules(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Padded arrays (pos, atoms, mask and, for SDF, bonds and formal charges) from an .sdf or .xyz file."""
    path = Path(path)
    if not path.is_file():
        raise MoleculeFormatError(f"{path}: no such file")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise MoleculeFormatError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix == ".xyz":
        return _finish(path, _read_xyz(path, text))
    if suffix == ".sdf":
        return _finish(path, _read_sdf(path))
    raise MoleculeFormatError(f"{path}: unknown format (expected .sdf or .xyz)")


def _read_xyz(path: Path, text: str):
    lines = text.splitlines()
    i, k, records = 0, 0, []
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        k += 1
        try:
            n = int(lines[i].split()[0])
        except (ValueError, IndexError):
            raise MoleculeFormatError(f"{path}: record {k} (line {i + 1}): expected an atom count, got {lines[i]!r}") from None
        body = lines[i + 2: i + 2 + n]
        if len(body) < n:
            raise MoleculeFormatError(f"{path}: record {k}: {n} atoms announced, {len(body)} lines present (truncated)")
        symbols, pos = [], []
        for j, ln in enumerate(body):
            parts = ln.split()
            try:
                symbols.append(parts[0].capitalize())
                pos.append([float(x) for x in parts[1:4]])
                if len(parts) < 4:
                    raise ValueError
            except (ValueError, IndexError):
                raise MoleculeFormatError(f"{path}: record {k} (line {i + 3 + j}): expected 'element x y z', got {ln!r}") from None
        pos_arr = np.asarray(pos, np.float32)
        records.append((_check(path, k, symbols, pos_arr), pos_arr, None, None))
        i += 2 + n
    return records


def _read_sdf(path: Path):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    records = []
    with open(path, "rb") as fh:
        for k, mol in enumerate(Chem.ForwardSDMolSupplier(fh, sanitize=False, removeHs=False), start=1):
            if mol is None:
                raise MoleculeFormatError(f"{path}: record {k}: RDKit could not parse this MOL block")
            if mol.GetNumConformers() == 0:
                raise MoleculeFormatError(f"{path}: record {k}: no 3-D coordinates")
            symbols = [a.GetSymbol() for a in mol.GetAtoms()]
            pos = np.asarray(mol.GetConformer().GetPositions(), np.float32)
            types = _check(path, k, symbols, pos)
            n = len(symbols)
            bonds = np.zeros((n, n), np.int64)
            for bond in mol.GetBonds():
                order = bond.GetBondTypeAsDouble()
                if order not in (1.0, 2.0, 3.0) or math.isnan(order):
                    raise MoleculeFormatError(
                        f"{path}: record {k}: bond {bond.GetBeginAtomIdx() + 1}-{bond.GetEndAtomIdx() + 1} has order "
                        f"{order}; expected single/double/triple (kekulised)")
                i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
                bonds[i, j] = bonds[j, i] = int(order)
            charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
            records.append((types, pos, bonds, charges))
    return records
