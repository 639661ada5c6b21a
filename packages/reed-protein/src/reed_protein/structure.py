"""Reading protein structures (PDB, mmCIF, gzipped or not) with biotite into backbone arrays.

Every residue of a polymer chain is kept in file order with its author residue number and insertion code;
a residue with a missing backbone atom is kept and masked (its coordinates are NaN), never dropped or
renumbered. Alternate locations: the highest-occupancy one. Modified residues map to their parent amino acid
(MSE -> M, ...) or to X. Waters and other HETATM groups without an N-CA-C backbone are ignored.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import BACKBONE, THREE_TO_ONE


class StructureError(ValueError):
    """A structure file cannot be read or holds no usable protein chain."""


@dataclass(frozen=True)
class Chain:
    """One chain: ``seq`` one-letter (X for unknown), ``coords`` (L,4,3) N/CA/C/O in Å (NaN where missing),
    ``res_ids`` author residue numbers, ``ins_codes`` insertion codes."""

    chain_id: str
    seq: str
    coords: np.ndarray
    res_ids: np.ndarray
    ins_codes: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def mask(self) -> np.ndarray:
        """(L,) True where N, CA and C are present."""
        return np.isfinite(self.coords[:, :3]).all(axis=(1, 2))

    def labels(self) -> list[str]:
        return [f"{self.chain_id}{r}{c}".strip() for r, c in zip(self.res_ids.tolist(), self.ins_codes.tolist(), strict=True)]


@dataclass(frozen=True)
class Structure:
    name: str
    chains: tuple[Chain, ...]

    def chain(self, chain_id: str) -> Chain:
        for c in self.chains:
            if c.chain_id == chain_id:
                return c
        raise StructureError(f"{self.name}: no chain {chain_id!r}; chains are {[c.chain_id for c in self.chains]}")


def _open_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise StructureError(f"{path}: corrupt gzip file ({e})") from None
    return raw.decode("utf-8", errors="replace")


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".pdb", ".ent"):
        return "pdb"
    if ext in (".cif", ".mmcif"):
        return "cif"
    raise StructureError(f"{path}: unknown structure format (expected .pdb, .ent, .cif or .mmcif, optionally .gz)")


def read_structure(path: str | os.PathLike) -> Structure:
    """Parse a structure file into backbone chains (first model)."""
    import biotite.structure as struc

    path = Path(path)
    if not path.is_file():
        raise StructureError(f"{path}: no such file")
    text = _open_text(path)
    if not text.strip():
        raise StructureError(f"{path}: file is empty")
    kind = _kind(path)
    try:
        if kind == "pdb":
            from biotite.structure.io.pdb import PDBFile

            f = PDBFile.read(io.StringIO(text))
            atoms = f.get_structure(model=1, altloc="occupancy", extra_fields=["occupancy"])
        else:
            from biotite.structure.io import pdbx

            f = pdbx.CIFFile.read(io.StringIO(text))
            atoms = pdbx.get_structure(f, model=1, altloc="occupancy", use_author_fields=True)
    except StructureError:
        raise
    except Exception as e:  # noqa: BLE001 - biotite raises many types for malformed input
        raise StructureError(f"{path}: not a readable {kind.upper()} structure ({type(e).__name__}: {e})") from None
    if atoms.array_length() == 0:
        raise StructureError(f"{path}: no atoms")
    chains = []
    for chain_id in dict.fromkeys(atoms.chain_id.tolist()):
        sub = atoms[atoms.chain_id == chain_id]
        starts = struc.get_residue_starts(sub)
        stops = np.append(starts[1:], sub.array_length())
        names = sub.atom_name
        seq, coords, res_ids, ins = [], [], [], []
        for lo, hi in zip(starts, stops, strict=True):
            res_name = sub.res_name[lo]
            atom_names = names[lo:hi].tolist()
            if res_name in ("HOH", "WAT", "DOD"):
                continue
            one = THREE_TO_ONE.get(res_name)
            has_backbone = all(a in atom_names for a in ("N", "CA", "C"))
            if one is None and not has_backbone:
                continue  # ligand / ion / nucleotide
            if one is None:
                one = "X"
            if not np.isfinite(sub.coord[lo:hi]).all():
                raise StructureError(
                    f"{path}: chain {chain_id} residue {sub.res_name[lo]} {sub.res_id[lo]}{sub.ins_code[lo]}: "
                    "non-finite coordinates")
            xyz = np.full((4, 3), np.nan)
            for k, a in enumerate(BACKBONE):
                if a in atom_names:
                    xyz[k] = sub.coord[lo + atom_names.index(a)]
                elif a == "O" and "OXT" in atom_names:
                    xyz[k] = sub.coord[lo + atom_names.index("OXT")]
            seq.append(one)
            coords.append(xyz)
            res_ids.append(int(sub.res_id[lo]))
            ins.append(str(sub.ins_code[lo]))
        if seq:
            chains.append(Chain(chain_id, "".join(seq), np.asarray(coords, np.float64), np.asarray(res_ids),
                                np.asarray(ins)))
    if not chains:
        raise StructureError(f"{path}: no protein chain found")
    for c in chains:
        if c.mask.sum() == 0:
            raise StructureError(f"{path}: chain {c.chain_id}: no residue has a complete N-CA-C backbone")
    return Structure(path.name.split(".")[0], tuple(chains))
