"""Builders of small structure files for tests."""

from __future__ import annotations

import numpy as np

from reed_protein.data import ChainSet

ONE_TO_THREE = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE",
                "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER",
                "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR", "X": "UNK"}


def atom_line(serial, name, res, chain, resi, x, y, z, icode=" ", altloc=" ", occ=1.0, het=False, element=None):
    rec = "HETATM" if het else "ATOM  "
    element = element or name[0]
    return (f"{rec}{serial:5d} {name:<4}{altloc}{res:>3} {chain}{resi:4d}{icode}   "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{20.0:6.2f}          {element:>2}")


def chain_pdb_lines(seq: str, coords: np.ndarray, chain: str = "A", start: int = 1, serial: int = 1):
    lines = []
    for k, (aa, xyz) in enumerate(zip(seq, coords, strict=True)):
        for name, p in zip(("N", "CA", "C", "O"), xyz, strict=True):
            if np.isfinite(p).all():
                lines.append(atom_line(serial, name, ONE_TO_THREE[aa], chain, start + k, *p))
                serial += 1
    return lines, serial


def real_chain(name: str | None = None, index: int | None = None):
    cs = ChainSet()
    i = int(np.nonzero(cs.names == name)[0][0]) if name else int(index if index is not None else cs.split("ts50")[0])
    it = cs.item(i)
    seq = "".join("ACDEFGHIKLMNPQRSTVWYX"[s] for s in it["S"])
    return seq, it["X"], str(cs.names[i])


def write_pdb(path, chains: list[tuple[str, str, np.ndarray]]) -> None:
    lines, serial = [], 1
    for cid, seq, coords in chains:
        ls, serial = chain_pdb_lines(seq, coords, cid, serial=serial)
        lines += ls + ["TER"]
    path.write_text("\n".join(lines + ["END"]) + "\n")
