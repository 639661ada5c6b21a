"""Reading and writing molecules: SDF (RDKit: 3-D coordinates, bonds, formal charges), XYZ, and EDM's ``.npz``
layout (``positions`` + atomic numbers in ``charges`` or ``atomic_numbers``, optional ``num_atoms``; or EDM's
sampler tensors ``x`` / ``one_hot`` over H, C, N, O, F / ``node_mask``).

Readers take any element and any size and check every record: ``read_records`` returns the good ones and the
bad ones by record number (1-based) with the reason, ``read_molecules`` raises ``MoleculeFormatError`` on the
first bad one. Writers go through a temporary file and a rename, so a failure never leaves a partial file.
Nothing here imports torch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reed_core.io import atomic_write

from .chem import build_mol
from .constants import ELEMENTS, PERIODIC, SYMBOL_INDEX, SYMBOL_Z, SYMBOLS, Z_TO_SYMBOL_INDEX

SUFFIXES = (".sdf", ".xyz", ".npz")


class MoleculeFormatError(ValueError):
    """A molecule file is malformed or holds something REED cannot model."""


@dataclass(frozen=True)
class Record:
    """One molecule of a file: ``number`` its 1-based record number; ``types`` (n,) indices into ``SYMBOLS``;
    ``pos`` (n,3) Å; ``bonds`` (n,n) orders 0-3 and ``charges`` (n,) formal charges when the file has them."""

    number: int
    types: np.ndarray
    pos: np.ndarray
    bonds: np.ndarray | None = None
    charges: np.ndarray | None = None


def to_mol(types: np.ndarray, bonds: np.ndarray, charges: np.ndarray, pos: np.ndarray):
    """An RDKit molecule with a conformer (unsanitised, property cache updated leniently)."""
    mol = build_mol(types, bonds, charges, pos)
    mol.UpdatePropertyCache(strict=False)
    return mol


def to_mols(arrays: dict[str, np.ndarray]):
    """RDKit molecules (unsanitised when RDKit rejects them) from padded arrays with bonds and charges."""
    mols = []
    for b in range(len(arrays["mask"])):
        n = int(arrays["mask"][b].sum())
        mols.append(to_mol(arrays["atoms"][b, :n], arrays["bonds"][b, :n, :n], arrays["charges"][b, :n], arrays["pos"][b, :n]))
    return mols


def write_molecules(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write padded molecule arrays to ``path`` (.sdf, .xyz or .npz in EDM's layout, chosen by the suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MoleculeFormatError(f"{path}: output must end in {', '.join(SUFFIXES)}")
    mask = np.asarray(arrays["mask"], bool)
    if suffix == ".npz":
        z = np.where(mask, SYMBOL_Z[np.where(mask, arrays["atoms"], 0)], 0)
        out = {"num_atoms": mask.sum(1).astype(np.int64), "charges": z.astype(np.int64),
               "positions": np.where(mask[..., None], arrays["pos"], 0).astype(np.float32)}
        if "bonds" in arrays:
            out |= {"bonds": np.asarray(arrays["bonds"], np.int8), "formal_charges": np.asarray(arrays["charges"], np.int8)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **out)
        atomic_write(path, buf.getvalue())
        return path
    if suffix == ".xyz":
        blocks = []
        for b in range(len(mask)):
            n = int(mask[b].sum())
            lines = [str(n), f"reed-molecule sample {b}"]
            lines += [f"{SYMBOLS[int(a)]} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}"
                      for a, p in zip(arrays["atoms"][b, :n], arrays["pos"][b, :n], strict=True)]
            blocks.append("\n".join(lines) + "\n")
        atomic_write(path, "".join(blocks))
        return path
    from rdkit import Chem

    parts = []
    for k, mol in enumerate(to_mols(arrays)):
        mol.SetProp("_Name", f"reed-molecule sample {k}")
        parts.append(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    atomic_write(path, "".join(parts))
    return path


def pad(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Padded arrays ``pos`` (B,N,3), ``atoms`` (B,N), ``mask`` (B,N) and, when every record has them, ``bonds``
    (B,N,N) and ``charges`` (B,N)."""
    n = max(len(r.types) for r in records)
    B = len(records)
    out = {"pos": np.zeros((B, n, 3), np.float32), "atoms": np.zeros((B, n), np.int64), "mask": np.zeros((B, n), bool)}
    has_bonds = all(r.bonds is not None for r in records)
    if has_bonds:
        out |= {"charges": np.zeros((B, n), np.int64), "bonds": np.zeros((B, n, n), np.int64)}
    for b, r in enumerate(records):
        k = len(r.types)
        out["pos"][b, :k], out["atoms"][b, :k], out["mask"][b, :k] = r.pos, r.types, True
        if has_bonds:
            out["bonds"][b, :k, :k], out["charges"][b, :k] = r.bonds, r.charges
    return out


def _problem(symbols: Sequence[str], pos: np.ndarray) -> str | None:
    """Why a record cannot be evaluated, or None."""
    if len(symbols) == 0:
        return "no atoms"
    unknown = sorted({s for s in symbols if s not in SYMBOL_INDEX})
    if unknown:
        return f"unknown element(s) {unknown}"
    if not np.isfinite(pos).all():
        return f"atom {int(np.nonzero(~np.isfinite(pos).all(1))[0][0]) + 1} has a non-finite coordinate"
    return None


def read_records(path: str | os.PathLike) -> tuple[list[Record], list[tuple[int, str]]]:
    """The good records of an .sdf / .xyz / .npz file and the bad ones as (record number, reason). A file that
    cannot be read at all (missing, empty, unknown format, not an npz) raises ``MoleculeFormatError``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise MoleculeFormatError(f"{path}: no such file")
    if suffix not in SUFFIXES:
        raise MoleculeFormatError(f"{path}: unknown format (expected {', '.join(SUFFIXES)})")
    if path.stat().st_size == 0 or (suffix != ".npz" and not path.read_bytes().strip()):
        raise MoleculeFormatError(f"{path}: file is empty")
    good, bad = {".xyz": _read_xyz, ".sdf": _read_sdf, ".npz": _read_npz}[suffix](path)
    if not good and not bad:
        raise MoleculeFormatError(f"{path}: no molecules in file")
    return good, bad


def read_molecules(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Padded arrays (see ``pad``) of every record; ``MoleculeFormatError`` naming the first bad record."""
    good, bad = read_records(path)
    if bad:
        raise MoleculeFormatError(f"{path}: record {bad[0][0]}: {bad[0][1]}")
    return pad(good)


def _symbol(token: str) -> str:
    return PERIODIC[int(token) - 1] if token.isdigit() and 0 < int(token) <= len(PERIODIC) else token.capitalize()


def _read_xyz(path: Path):
    lines = path.read_text(errors="replace").splitlines()
    good, bad = [], []
    i, k = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        k += 1
        head = lines[i].split()
        if len(head) != 1 or not head[0].isdigit():
            bad.append((k, f"line {i + 1}: expected an atom count, got {lines[i][:60]!r}"))
            i += 1  # resynchronise on the next line that is a lone atom count
            while i < len(lines) and not (len(s := lines[i].split()) == 1 and s[0].isdigit()):
                i += 1
            continue
        n = int(head[0])
        body = lines[i + 2: i + 2 + n]
        if len(body) < n:
            bad.append((k, f"{n} atoms announced, {len(body)} lines present (truncated)"))
            break
        symbols, rows, problem = [], [], None
        for j, ln in enumerate(body):
            parts = ln.split()
            try:
                rows.append([float(x) for x in parts[1:4]])
                symbols.append(_symbol(parts[0]))
                if len(parts) < 4:
                    raise ValueError
            except (ValueError, IndexError):
                problem = f"line {i + 3 + j}: expected 'element x y z', got {ln[:60]!r}"
                break
        i += 2 + n
        pos = np.asarray(rows, np.float32).reshape(-1, 3)
        if problem or (problem := _problem(symbols, pos)):
            bad.append((k, problem))
            continue
        good.append(Record(k, np.array([SYMBOL_INDEX[s] for s in symbols], np.int64), pos))
    return good, bad


def _read_sdf(path: Path):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    good, bad = [], []
    with open(path, "rb") as fh:
        for k, mol in enumerate(Chem.ForwardSDMolSupplier(fh, sanitize=False, removeHs=False), start=1):
            if mol is None:
                bad.append((k, "RDKit could not parse this MOL block"))
                continue
            if mol.GetNumConformers() == 0:
                bad.append((k, "no 3-D coordinates"))
                continue
            symbols = [a.GetSymbol() for a in mol.GetAtoms()]
            pos = np.asarray(mol.GetConformer().GetPositions(), np.float32).reshape(-1, 3)
            if problem := _problem(symbols, pos):
                bad.append((k, problem))
                continue
            bonds = Chem.GetAdjacencyMatrix(mol, useBO=True)
            if not np.isin(bonds, (0.0, 1.0, 2.0, 3.0)).all():
                kek = Chem.Mol(mol)
                try:  # aromatic bonds: the Kekulé form
                    Chem.Kekulize(kek, clearAromaticFlags=True)
                    bonds = Chem.GetAdjacencyMatrix(kek, useBO=True, force=True)
                except (ValueError, RuntimeError):
                    pass
                if not np.isin(bonds, (0.0, 1.0, 2.0, 3.0)).all():
                    i, j = np.argwhere(~np.isin(bonds, (0.0, 1.0, 2.0, 3.0)))[0]
                    bad.append((k, f"bond {i + 1}-{j + 1} has order {bonds[i, j]}; expected single/double/triple "
                                   "(or aromatic that RDKit can kekulise)"))
                    continue
            charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
            good.append(Record(k, np.array([SYMBOL_INDEX[s] for s in symbols], np.int64), pos,
                               bonds.astype(np.int64), charges))
    return good, bad


def _read_npz(path: Path):
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise MoleculeFormatError(f"{path}: not a readable .npz ({e})") from None
    pos = next((arrays[k] for k in ("positions", "x", "pos") if k in arrays), None)
    if pos is None or pos.ndim != 3 or pos.shape[-1] != 3:
        raise MoleculeFormatError(f"{path}: expected positions (B,N,3) under 'positions' (or EDM's 'x'); "
                                  f"found keys {sorted(arrays)}")
    if "one_hot" in arrays:
        one_hot = arrays["one_hot"]
        if one_hot.shape[:2] != pos.shape[:2] or one_hot.shape[-1] != len(ELEMENTS):
            raise MoleculeFormatError(f"{path}: one_hot has shape {one_hot.shape}; expected (B,N,{len(ELEMENTS)}) over "
                                      f"{', '.join(ELEMENTS)} (give atomic numbers as 'charges' for other elements)")
        node = arrays.get("node_mask", one_hot.sum(-1) > 0).reshape(pos.shape[:2]).astype(bool)
        types = np.where(node, one_hot.argmax(-1), -1)
    else:
        z = next((arrays[k] for k in ("charges", "atomic_numbers", "z") if k in arrays), None)
        if z is None:
            raise MoleculeFormatError(f"{path}: no atom types: expected atomic numbers under 'charges' or "
                                      f"'atomic_numbers', or EDM's 'one_hot'; found keys {sorted(arrays)}")
        z = z.reshape(pos.shape[:2]).astype(np.int64)
        if (z < 0).any() or (z > len(PERIODIC)).any():
            b = int(np.nonzero(((z < 0) | (z > len(PERIODIC))).any(1))[0][0])
            raise MoleculeFormatError(f"{path}: record {b + 1}: atomic numbers must be 0 (padding) to {len(PERIODIC)}")
        types = np.where(z > 0, Z_TO_SYMBOL_INDEX[z], -1)
    counts = (types >= 0).sum(1)
    if "num_atoms" in arrays and not (np.asarray(arrays["num_atoms"]).reshape(-1) == counts).all():
        b = int(np.nonzero(np.asarray(arrays["num_atoms"]).reshape(-1) != counts)[0][0])
        raise MoleculeFormatError(f"{path}: record {b + 1}: num_atoms says {int(arrays['num_atoms'].reshape(-1)[b])}, "
                                  f"the atom types give {int(counts[b])}")
    has_bonds = "bonds" in arrays and "formal_charges" in arrays
    good, bad = [], []
    for b in range(len(pos)):
        keep = types[b] >= 0
        p = pos[b][keep].astype(np.float32)
        if problem := _problem([SYMBOLS[t] for t in types[b][keep]], p):
            bad.append((b + 1, problem))
            continue
        extra = {}
        if has_bonds:
            extra = {"bonds": arrays["bonds"][b][np.ix_(keep, keep)].astype(np.int64),
                     "charges": arrays["formal_charges"][b][keep].astype(np.int64)}
        good.append(Record(b + 1, types[b][keep], p, **extra))
    return good, bad
