"""Chemistry constants for QM9 with explicit hydrogens: elements, charges, bond classes and EDM's bond tables.

EDM (Hoogeboom et al. 2022, ``qm9/bond_analyze.py``) assigns bond orders from interatomic distances with the
typical bond lengths below (pm) plus margins of 10 / 5 / 3 pm for single / double / triple bonds; an atom is
stable when the sum of its bond orders equals its valence (H 1, C 4, N 3, O 2, F 1).
"""

from __future__ import annotations

import numpy as np

ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)
Z_TO_INDEX: dict[int, int] = {z: i for i, z in enumerate(ATOMIC_NUMBERS)}
SYMBOL_TO_INDEX: dict[str, int] = {s: i for i, s in enumerate(ELEMENTS)}
CHARGES: tuple[int, ...] = (-1, 0, 1)
CHARGE_TO_INDEX: dict[int, int] = {c: i for i, c in enumerate(CHARGES)}
BOND_ORDERS: tuple[int, ...] = (0, 1, 2, 3)  # none, single, double, triple (kekulised)
VALENCE = np.array([1, 4, 3, 2, 1], dtype=np.int64)  # per element index

_BONDS1 = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142,
}
_BONDS2 = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121, ("O", "O"): 121}
_BONDS3 = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
MARGINS = (10, 5, 3)


def _table(bonds: dict[tuple[str, str], int], margin: int) -> np.ndarray:
    """(5,5) threshold table in pm (bond length + margin); -1 where the bond order does not exist."""
    out = np.full((len(ELEMENTS), len(ELEMENTS)), -1.0)
    for (a, b), length in bonds.items():
        i, j = SYMBOL_TO_INDEX[a], SYMBOL_TO_INDEX[b]
        out[i, j] = out[j, i] = length + margin
    return out


THRESHOLD_SINGLE = _table(_BONDS1, MARGINS[0])
THRESHOLD_DOUBLE = _table(_BONDS2, MARGINS[1])
THRESHOLD_TRIPLE = _table(_BONDS3, MARGINS[2])
