"""Reading protein structures (PDB, mmCIF, gzipped or not) with biotite into backbone arrays.

Every residue of a polymer chain is kept in file order with its author residue number and insertion code;
a residue with a missing backbone atom is kept and masked (its coordinates are NaN), never dropped or
renumbered. Alternate locations: the highest-occupancy one. Modified residues map to their parent amino acid
(MSE -> M, ...) or to X (also when they lack N/CA/C: peptide-linking per the CCD). Waters and other groups
without an N-CA-C backbone (ligands, ions, nucleotides) are ignored. A residue number repeated in a chain is an
error, never a silent duplicate or merge.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import ALPHABET, BACKBONE, THREE_TO_ONE


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

    def mpnn_positions(self) -> tuple[np.ndarray, int]:
        """ProteinMPNN's numbering of this chain, which its JSON inputs (fixed / tied positions, omissions, per-
        residue biases, PSSMs) use: each residue's 0-based position in the sequence ProteinMPNN's PDB parser builds,
        and that sequence's length. The parser lays out every residue number from the chain's first to its last,
        a missing number as one gap position and each further insertion code of a number as one more position
        (codes in sorted order), so for a chain numbered without gaps it is the file order."""
        if not len(self):
            return np.zeros(0, np.int64), 0
        numbers = np.asarray(self.res_ids, np.int64)
        codes = np.char.strip(np.asarray(self.ins_codes, str))
        order = np.lexsort((codes, numbers))
        ranked = numbers[order]
        extra = np.cumsum(np.r_[False, ranked[1:] == ranked[:-1]])  # further insertion codes so far
        positions = np.empty(len(self), np.int64)
        positions[order] = ranked - ranked[0] + extra
        return positions, int(ranked[-1] - ranked[0] + extra[-1] + 1)


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
        except (OSError, EOFError, zlib.error) as e:
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


_WATER = ("HOH", "WAT", "DOD")


def _chain(path: Path, chain_id: str, sub) -> Chain | None:
    """The residues of one chain, vectorised over atoms. A residue starts wherever the residue number, insertion
    code or residue name changes (biotite's residue starts ignore the name, which merges two residues that share
    a number). A residue number seen twice in one chain is an error: it means duplicated ATOM blocks or models
    without MODEL records, and designing it twice would be silently wrong."""
    res_id, ins, name, atom = sub.res_id, sub.ins_code, sub.res_name, sub.atom_name
    new = np.ones(sub.array_length(), bool)
    new[1:] = (res_id[1:] != res_id[:-1]) | (ins[1:] != ins[:-1]) | (name[1:] != name[:-1])
    starts, rix = np.flatnonzero(new), np.cumsum(new) - 1  # residue of each atom

    def where(r: int) -> str:
        return f"{path}: chain {chain_id} residue {name[starts[r]]} {res_id[starts[r]]}{ins[starts[r]]}".rstrip()

    if not (finite := np.isfinite(sub.coord).all(axis=1)).all():
        raise StructureError(f"{where(rix[np.argmin(finite)])}: non-finite coordinates")
    coords = np.full((len(starts), 4, 3), np.nan)
    for k, a in [*enumerate(BACKBONE), (3, "OXT")]:
        sel = np.flatnonzero(atom == a)
        if (dup := np.bincount(rix[sel], minlength=len(starts)) > 1).any():
            raise StructureError(f"{where(np.argmax(dup))}: atom {a} appears twice (duplicated ATOM records?)")
        if a == "OXT":  # the terminal oxygen stands in for a missing O
            sel = sel[~np.isfinite(coords[rix[sel], 3, 0])]
        coords[rix[sel], k] = sub.coord[sel]
    rname = name[starts]
    one = np.array([THREE_TO_ONE.get(n, "") for n in rname.tolist()])
    backbone = np.isfinite(coords[:, :3]).all(axis=(1, 2))
    unmapped = {n for n in set(rname[(one == "") & ~backbone].tolist()) if n not in _WATER}
    peptide = {n for n in unmapped if "PEPTIDE" in str(_link_type(n)).upper()}  # modified residues, kept as X
    keep = ~np.isin(rname, _WATER) & ((one != "") | backbone | np.isin(rname, list(peptide)))
    if not keep.any():
        return None
    keys = [f"{r}{c}" for r, c in zip(res_id[starts][keep].tolist(), ins[starts][keep].tolist(), strict=True)]
    if len(set(keys)) < len(keys):
        seen = sorted({k for k in keys if keys.count(k) > 1}, key=keys.index)
        raise StructureError(f"{path}: chain {chain_id}: residue number(s) {', '.join(seen[:5])} occur more than once "
                             "(duplicated ATOM blocks, models without MODEL records, or two residues sharing a "
                             "number without an insertion code)")
    return Chain(chain_id, "".join(np.where(one[keep] == "", "X", one[keep]).tolist()), coords[keep],
                 res_id[starts][keep].astype(np.int64), ins[starts][keep].astype(str))


def _link_type(res_name: str) -> str | None:
    try:
        from biotite.structure.info import link_type

        return link_type(res_name)
    except Exception:  # noqa: BLE001 - an unknown name or no CCD: treat as a ligand
        return None


def read_structure(path: str | os.PathLike) -> Structure:
    """Parse a structure file into backbone chains (first model)."""
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
    chains = [c for cid in dict.fromkeys(atoms.chain_id.tolist()) if (c := _chain(path, cid, atoms[atoms.chain_id == cid]))]
    if not chains:
        raise StructureError(f"{path}: no protein chain found")
    for c in chains:
        if c.mask.sum() == 0:
            raise StructureError(f"{path}: chain {c.chain_id}: no residue has a complete N-CA-C backbone")
    return Structure(path.name.split(".")[0], tuple(chains))


def read_parsed_jsonl(path: str | os.PathLike) -> list[Structure | StructureError]:
    """ProteinMPNN's parsed structures (its ``--jsonl_path`` input, written by its
    ``helper_scripts/parse_multiple_chains.py``): one JSON object per line with ``name``, per chain ``seq_chain_<id>``
    and ``coords_chain_<id>`` = ``{"N_chain_<id>": [[x, y, z], ...], "CA_...", "C_...", "O_..."}`` (NaN where an
    atom is missing; ``-`` in the sequence for a gap position). Chains come in the order of their keys, residues
    numbered 1.. in that layout, which is ProteinMPNN's own numbering (a gap is a masked X residue here, as it is
    there). Each line gives a Structure, or a StructureError naming the file, line and problem, so one bad record
    does not lose the others; an unreadable file is a StructureError."""
    import json

    path = Path(path)
    if not path.is_file():
        raise StructureError(f"{path}: no such file")
    lines = _open_text(path).splitlines()
    out: list[Structure | StructureError] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            out.append(_parsed_record(json.loads(line), where))
        except json.JSONDecodeError as e:
            out.append(StructureError(f"{where}: not JSON ({e.msg})"))
        except StructureError as e:
            out.append(e)
    if not out:
        raise StructureError(f"{path}: no parsed structures (ProteinMPNN's JSON Lines, one object per line)")
    return out


def _parsed_record(record, where: str) -> Structure:
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise StructureError(f"{where}: expected an object with a \"name\" (ProteinMPNN's parsed structure)")
    where = f"{where} ({record['name']})"
    ids = [k[len("seq_chain_"):] for k in record if k.startswith("seq_chain_")]
    if not ids:
        raise StructureError(f"{where}: no seq_chain_<id> entries")
    chains = []
    for cid in ids:
        seq, coords = record[f"seq_chain_{cid}"], record.get(f"coords_chain_{cid}")
        if not isinstance(seq, str) or not isinstance(coords, dict):
            raise StructureError(f"{where}: chain {cid}: expected a sequence string and a coords_chain_{cid} object")
        atoms = []
        for atom in BACKBONE:
            try:
                a = np.asarray(coords[f"{atom}_chain_{cid}"], dtype=np.float64)
            except KeyError:
                raise StructureError(f"{where}: chain {cid}: no {atom}_chain_{cid} coordinates") from None
            except (TypeError, ValueError):
                a = np.zeros(0)
            if a.shape != (len(seq), 3):
                raise StructureError(f"{where}: chain {cid}: {atom}_chain_{cid} must be {len(seq)} [x, y, z] "
                                     f"triples (one per sequence position), got shape {a.shape}")
            atoms.append(a)
        xyz = np.stack(atoms, axis=1)
        if np.isinf(xyz).any():
            raise StructureError(f"{where}: chain {cid}: infinite coordinates")
        xyz[~np.isfinite(xyz).all(-1)] = np.nan
        letters = "".join(a if a in ALPHABET else "X" for a in seq.upper())  # "-" (a gap) and the unknown: X
        chain = Chain(cid, letters, xyz, np.arange(1, len(seq) + 1, dtype=np.int64), np.full(len(seq), ""))
        if not len(chain) or chain.mask.sum() == 0:
            raise StructureError(f"{where}: chain {cid}: no residue has a complete N-CA-C backbone")
        chains.append(chain)
    return Structure(record["name"], tuple(chains))
