"""Valence errors and the smallest geometric repair of EDM-unstable molecules (``reed_molecule.diagnose``)."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from reed_molecule.chem import edm_bond_orders, pairwise_distances
from reed_molecule.constants import SYMBOLS, Z_TO_SYMBOL_INDEX
from reed_molecule.diagnose import _candidates, repair_shift, valence_errors
from reed_molecule.metrics import edm_stability

DATA = Path(__file__).parent / "data"
H, C, N, O = 0, 1, 2, 3


def ethene(cc: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C2H4 in the plane with the C-C distance ``cc`` (Å) and C-H 1.08 Å."""
    x = cc / 2
    pos = [[-x, 0, 0], [x, 0, 0], [-x - 0.55, 0.93, 0], [-x - 0.55, -0.93, 0], [x + 0.55, 0.93, 0],
           [x + 0.55, -0.93, 0]]
    return np.array([pos], np.float32), np.array([[C, C, H, H, H, H]]), np.ones((1, 6), bool)


def test_a_stretched_double_bond_is_a_one_pm_repair():
    pos, typ, mask = ethene(1.33)
    assert valence_errors(pos, typ, mask).tolist() == [[0] * 6]
    assert repair_shift(pos, typ, mask).tolist() == [0.0]
    pos, typ, mask = ethene(1.40)  # EDM's C=C threshold is 134 + 5 pm: at 140 pm the bond reads single
    assert valence_errors(pos, typ, mask).tolist() == [[-1, -1, 0, 0, 0, 0]]
    assert repair_shift(pos, typ, mask) == pytest.approx([0.01], abs=2e-5)
    pos, typ, mask = ethene(1.46)
    assert repair_shift(pos, typ, mask) == pytest.approx([0.07], abs=2e-5)
    assert repair_shift(pos, typ, mask, max_shift=0.05).tolist() == [np.inf]


def test_detached_hydrogen_and_undefined_elements():
    pos, typ, mask = ethene(1.33)
    pos[0, 5] = [4.0, 3.0, 0.0]  # one hydrogen 3 Å away from everything: no small move gives it a bond
    assert valence_errors(pos, typ, mask)[0].tolist() == [0, -1, 0, 0, 0, -1]
    assert repair_shift(pos, typ, mask).tolist() == [np.inf]
    typ = typ.copy()
    typ[0, 5] = SYMBOLS.index("S")
    assert np.isnan(repair_shift(pos, typ, mask)).all()
    assert valence_errors(pos, typ, mask)[0, 5] == 0
    with pytest.raises(ValueError, match="max_shift"):
        repair_shift(pos, typ, mask, max_shift=0.3)


def test_padding_and_a_batch_agree_with_edm_stability():
    d = np.load(DATA / "gschnet_samples_edm.npz")
    z = d["atomic_numbers"][:400].astype(int)
    mask = z > 0
    types = np.where(mask, Z_TO_SYMBOL_INDEX[z], 0)
    pos = d["positions"][:400]
    s = repair_shift(pos, types, mask)
    _, mol_stable, n = edm_stability(pos, types, mask)
    defined = ~np.isnan(s)
    assert defined.sum() == n
    assert 100 * (s[defined] == 0).mean() == pytest.approx(mol_stable)
    assert ((s == 0) == (valence_errors(pos, types, mask) == 0).all(1))[defined].all()
    one = repair_shift(pos[7:8, : mask[7].sum()], types[7:8, : mask[7].sum()], mask[7:8, : mask[7].sum()])
    assert one[0] == s[7] or (np.isnan(one[0]) and np.isnan(s[7]))


def brute_force(pos, typ, max_pm=10.0):
    """The smallest repair by enumerating every assignment of the candidate pairs (small molecules only)."""
    n = len(typ)
    d = 100 * pairwise_distances(pos[None])[0]
    orders = edm_bond_orders(pos[None], typ[None], np.ones((1, n), bool))[0]
    need = -valence_errors(pos[None], typ[None], np.ones((1, n), bool), orders[None])[0]
    ii, jj, up, down = _candidates(d, typ, orders, max_pm)
    best = np.inf
    for values in itertools.product((0, 1, -1), repeat=len(ii)):
        v = np.array(values)
        cost = np.where(v == 1, up, np.where(v == -1, down, 0.0))
        if not np.isfinite(cost).all() or (cost > max_pm).any():
            continue
        got = np.zeros(n, np.int64)
        np.add.at(got, ii, v)
        np.add.at(got, jj, v)
        if (got == need).all():
            best = min(best, cost.max() / 100)
    return best, len(ii)


def test_the_search_equals_brute_force_on_noisy_small_molecules():
    """Small G-SchNet molecules with Gaussian noise on the positions: every stable, near-miss and hopeless case the
    search reports equals exhaustive enumeration over the candidate pairs."""
    d = np.load(DATA / "gschnet_samples_edm.npz")
    z = d["atomic_numbers"].astype(int)
    small = np.nonzero(((z > 0).sum(1) <= 9) & (z <= 9).all(1))[0][:120]
    rng = np.random.default_rng(0)
    checked = {"stable": 0, "repair": 0, "inf": 0}
    for b in small:
        k = int((z[b] > 0).sum())
        typ = Z_TO_SYMBOL_INDEX[z[b, :k]]
        for sigma in (0.0, 0.03, 0.06):
            pos = (d["positions"][b, :k] + sigma * rng.standard_normal((k, 3))).astype(np.float32)
            expected, n_pairs = brute_force(pos, typ)
            if n_pairs > 9:
                continue
            got = repair_shift(pos[None], typ[None], np.ones((1, k), bool))[0]
            assert got == pytest.approx(expected, abs=1e-6), (b, sigma)
            checked["stable" if expected == 0 else "inf" if np.isinf(expected) else "repair"] += 1
    assert min(checked.values()) >= 5, checked
