"""Chemistry constants for QM9 with explicit hydrogens: elements, charges, bond classes and EDM's bond tables.

EDM (Hoogeboom et al. 2022, ``qm9/bond_analyze.py``) assigns bond orders from interatomic distances with
typical bond lengths (pm; wiredchemist.com and chemistry-reference.com tables, the ones EDM uses for QM9 and
GEOM) plus margins of 10 / 5 / 3 pm for single / double / triple bonds; an atom is stable when the sum of its
bond orders equals its valence (H 1, C 4, N 3, O 2, F 1). Stability is defined for those five elements only.

Element indices: the model knows ``ELEMENTS`` (H, C, N, O, F = 0..4). Files and metrics use ``SYMBOLS``, the
same five first and then the rest of the periodic table, so a model's element index is also a metric index.
"""

from __future__ import annotations

import numpy as np

ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
PERIODIC: tuple[str, ...] = tuple(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb "
    "Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au "
    "Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv "
    "Ts Og".split())  # PERIODIC[Z - 1] is the symbol of atomic number Z
SYMBOLS: tuple[str, ...] = ELEMENTS + tuple(s for s in PERIODIC if s not in ELEMENTS)
SYMBOL_INDEX: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
Z_TO_SYMBOL_INDEX = np.array([-1] + [SYMBOL_INDEX[s] for s in PERIODIC], np.int64)  # atomic number -> SYMBOLS index
SYMBOL_Z = np.array([PERIODIC.index(s) + 1 for s in SYMBOLS], np.int64)  # SYMBOLS index -> atomic number
CHARGES: tuple[int, ...] = (-1, 0, 1)
CHARGE_TO_INDEX: dict[int, int] = {c: i for i, c in enumerate(CHARGES)}
BOND_ORDERS: tuple[int, ...] = (0, 1, 2, 3)  # none, single, double, triple (kekulised)
VALENCE = np.array([1, 4, 3, 2, 1] + [-1] * (len(SYMBOLS) - 5), dtype=np.int64)  # per SYMBOLS index; -1: undefined

_BONDS1 = {  # typical single-bond lengths (pm)
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92, "B": 119, "Si": 148, "P": 144, "As": 152, "S": 134,
          "Cl": 127, "Br": 141, "I": 161},
    "C": {"C": 154, "N": 147, "O": 143, "F": 135, "Si": 185, "P": 184, "S": 182, "Cl": 177, "Br": 194, "I": 214},
    "N": {"N": 145, "O": 140, "F": 136, "Cl": 175, "Br": 214, "S": 168, "I": 222, "P": 177},
    "O": {"O": 148, "F": 142, "Br": 172, "S": 151, "P": 163, "Si": 163, "Cl": 164, "I": 194},
    "F": {"F": 142, "S": 158, "Si": 160, "Cl": 166, "Br": 178, "P": 156, "I": 187},
    "B": {"Cl": 175},
    "Si": {"Si": 233, "S": 200, "Cl": 202, "Br": 215, "I": 243},
    "Cl": {"Cl": 199, "P": 203, "S": 207, "Br": 214},
    "S": {"S": 204, "Br": 225, "P": 210, "I": 234},
    "Br": {"Br": 228, "P": 222},
    "P": {"P": 221},
    "I": {"I": 266},
}
_BONDS2 = {"C": {"C": 134, "N": 129, "O": 120, "S": 160}, "N": {"N": 125, "O": 121}, "O": {"O": 121, "P": 150},
           "P": {"S": 186}}
_BONDS3 = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"N": 110}}
MARGINS = (10, 5, 3)


def _table(bonds: dict[str, dict[str, int]], margin: int) -> np.ndarray:
    """(S,S) threshold table over ``SYMBOLS`` in pm (bond length + margin); -1 where the bond order does not exist."""
    out = np.full((len(SYMBOLS), len(SYMBOLS)), -1.0)
    for a, row in bonds.items():
        for b, length in row.items():
            i, j = SYMBOL_INDEX[a], SYMBOL_INDEX[b]
            out[i, j] = out[j, i] = length + margin
    return out


THRESHOLD_SINGLE = _table(_BONDS1, MARGINS[0])
THRESHOLD_DOUBLE = _table(_BONDS2, MARGINS[1])
THRESHOLD_TRIPLE = _table(_BONDS3, MARGINS[2])
