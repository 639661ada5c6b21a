"""Why molecules fail EDM stability: per-atom valence errors and the smallest geometric repair.

EDM's stability assigns each atom pair a bond order from its distance alone (``chem.edm_bond_orders``: thresholds
at typical bond lengths plus 10 / 5 / 3 pm) and calls an atom stable when its bond orders sum to its valence. A
molecule can fail for two very different reasons, and they call for different fixes:

* **precision**: the bond graph is right but a few distances sit just on the wrong side of a threshold (a C=C at
  1.40 Å reads as single, leaving both carbons at valence 3). Moving those distances by a few hundredths of an
  Ångström would make the molecule stable; the denoiser's accuracy at low noise is what limits it.
* **topology / composition**: no small move helps (a hydrogen 1.6 Å from anything, a carbon with five
  neighbours, or atom types whose valences sum to an odd number, which no bond graph can satisfy).

``repair_shift`` separates them: the smallest s such that moving atom-pair distances by at most s each (each pair
crossing at most one threshold, i.e. changing its order by one) makes every atom's valence exact; 0 for a stable
molecule, ``inf`` when nothing within ``max_shift`` does. Moving distances is treated pair by pair (whether
positions in 3-D can realise exactly those distances is not asked), so s is a lower bound on the positional error
behind the failure. The search is exact: for each s it asks whether signed order changes on the pairs within s
of a threshold can cancel every atom's valence error (a degree-constrained subgraph problem, solved per connected
group of candidate pairs by backtracking with capacity pruning); ``nan`` where stability is undefined (elements
other than H, C, N, O, F) or the search hit ``node_limit`` (or, for a molecule of thousands of atoms, Python's
recursion limit).

``failure_report`` sums it all up over batches of molecules: the unstable molecules by smallest repair, the share
with an odd sum of valences (a wrong composition), the unstable atoms by element and valence, and the spread of
the bond lengths EDM reads (``benchmarks/molecule_failures.py``, ``reed-molecule eval --diagnose``).

Numpy only, no torch and no RDKit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from .chem import edm_bond_orders, pairwise_distances
from .constants import ELEMENTS, SYMBOLS, THRESHOLD_DOUBLE, THRESHOLD_SINGLE, THRESHOLD_TRIPLE, VALENCE
from .metrics import stability_defined

__all__ = ["AMBIGUOUS_PM", "REPAIR_SHIFTS", "failure_report", "repair_shift", "valence_errors"]

REPAIR_SHIFTS = (0.01, 0.02, 0.05, 0.1)  # Å: the bins ``failure_report`` counts
AMBIGUOUS_PM = 2.0  # a bonded pair this close to a bond-order threshold (pm) is ambiguous to EDM
BONDS = (("C", "H", 1), ("N", "H", 1), ("O", "H", 1), ("C", "C", 1), ("C", "C", 2), ("C", "N", 1), ("C", "O", 1),
         ("C", "O", 2))  # the bond lengths ``failure_report`` describes
_THRESHOLDS = np.stack([THRESHOLD_SINGLE, THRESHOLD_DOUBLE, THRESHOLD_TRIPLE])  # (3,S,S) pm; order k+1 when d < [k]


def valence_errors(positions: np.ndarray, atom_types: np.ndarray, mask: np.ndarray,
                   orders: np.ndarray | None = None) -> np.ndarray:
    """(B,N) int: EDM valence (sum of distance-based bond orders) minus the element's valence; 0 on padding and
    on elements other than H, C, N, O, F. ``orders``: the batch's ``edm_bond_orders`` when the caller has them."""
    atom_types, mask = np.asarray(atom_types), np.asarray(mask, dtype=bool)
    if orders is None:
        orders = edm_bond_orders(positions, atom_types, mask)
    expected = VALENCE[np.where(mask, atom_types, 0)]
    ok = mask & (atom_types < len(ELEMENTS))
    return np.where(ok, orders.sum(-1) - expected, 0)


def _candidates(d_pm: np.ndarray, types: np.ndarray, orders: np.ndarray, max_pm: float):
    """Pairs within ``max_pm`` of a threshold: (i, j, up_cost, down_cost) arrays, costs in pm (inf: not possible).
    Up: the order rises by one when the distance drops below the next threshold; down: it falls by one when the
    distance reaches the current order's threshold."""
    n = len(types)
    iu, ju = np.triu_indices(n, 1)
    ti, tj, o, dd = types[iu], types[ju], orders[iu, ju], d_pm[iu, ju].astype(np.float64)
    up_thr = np.where(o < 3, _THRESHOLDS[np.minimum(o, 2), ti, tj], -1.0)
    up = np.where(up_thr > 0, dd - up_thr, np.inf)
    down_thr = _THRESHOLDS[np.maximum(o - 1, 0), ti, tj]
    down = np.where(o > 0, down_thr - dd, np.inf)
    keep = np.minimum(up, down) <= max_pm
    return iu[keep], ju[keep], np.maximum(up[keep], 0.0), np.maximum(down[keep], 0.0)


class _SearchLimit(Exception):
    pass


def _feasible(need: np.ndarray, ii, jj, signs, node_limit: int) -> bool:
    """Can one value per pair k, from ``signs[k]`` (a tuple of +1 / -1) or 0, add up to ``need`` at every atom
    (pair k adds its value to atoms ii[k] and jj[k])? Solved per connected group of pairs that touches an atom
    with a nonzero need; raises ``_SearchLimit`` past ``node_limit`` search nodes."""
    need = need.astype(np.int64).copy()
    if (need != 0).sum() == 0:
        return True
    if int(need.sum()) % 2:  # every change moves the total by +-2
        return False
    n = len(need)
    adj: list[list[int]] = [[] for _ in range(n)]
    for k, (a, b) in enumerate(zip(ii.tolist(), jj.tolist(), strict=True)):
        adj[a].append(k)
        adj[b].append(k)
    cap_up = np.zeros(n, np.int64)
    cap_dn = np.zeros(n, np.int64)
    for k, s in enumerate(signs):
        for a in (ii[k], jj[k]):
            cap_up[a] += 1 in s
            cap_dn[a] += -1 in s
    if ((need > cap_up) | (-need > cap_dn)).any():
        return False
    seen = np.zeros(n, bool)
    nodes = [0]
    for start in np.nonzero(need)[0].tolist():
        if seen[start]:
            continue
        # the connected group of pairs around this atom, in breadth-first order (pairs near the errors first)
        group, queue, seen[start], in_group = [], [start], True, set()
        while queue:
            a = queue.pop(0)
            for k in adj[a]:
                if k not in in_group:
                    in_group.add(k)
                    group.append(k)
                    for c in (ii[k], jj[k]):
                        if not seen[c]:
                            seen[c] = True
                            queue.append(c)
        if not _search(group, 0, need, cap_up, cap_dn, ii, jj, signs, nodes, node_limit):
            return False
    return True


def _search(group, pos, need, cap_up, cap_dn, ii, jj, signs, nodes, node_limit) -> bool:
    if pos == len(group):
        return True  # capacities are exhausted, so the pruning below already forced every need to 0
    nodes[0] += 1
    if nodes[0] > node_limit:
        raise _SearchLimit
    k = group[pos]
    a, b, s = ii[k], jj[k], signs[k]
    up, dn = 1 in s, -1 in s
    cap_up[a] -= up
    cap_up[b] -= up
    cap_dn[a] -= dn
    cap_dn[b] -= dn
    # the change that serves atom a's need first, then none, then one against it
    values = sorted((0, *s), key=lambda v: 0 if need[a] * v > 0 else 1 if v == 0 else 2)
    ok = False
    for v in values:
        need[a] -= v
        need[b] -= v
        if (-cap_dn[a] <= need[a] <= cap_up[a] and -cap_dn[b] <= need[b] <= cap_up[b]
                and _search(group, pos + 1, need, cap_up, cap_dn, ii, jj, signs, nodes, node_limit)):
            ok = True
        need[a] += v
        need[b] += v
        if ok:
            break
    cap_up[a] += up
    cap_up[b] += up
    cap_dn[a] += dn
    cap_dn[b] += dn
    return ok


def repair_shift(positions: np.ndarray, atom_types: np.ndarray, mask: np.ndarray, max_shift: float = 0.1,
                 node_limit: int = 200_000, distances: np.ndarray | None = None) -> np.ndarray:
    """(B,) float, Å: the smallest s such that changing atom-pair distances by at most s each makes every atom
    EDM-stable (module docstring); 0 for a stable molecule, inf when no change within ``max_shift`` (at most 0.15 Å,
    so that no pair can cross two thresholds) does, nan where stability is undefined or the search gave up.
    ``distances``: the batch's ``pairwise_distances`` when the caller has them already."""
    if not 0 < max_shift <= 0.15:
        raise ValueError(f"max_shift must be in (0, 0.15] Å, got {max_shift}")
    positions = np.asarray(positions)
    atom_types, mask = np.asarray(atom_types), np.asarray(mask, dtype=bool)
    d = pairwise_distances(positions) if distances is None else distances
    orders = edm_bond_orders(positions, atom_types, mask, d)
    errors = valence_errors(positions, atom_types, mask, orders)
    defined = stability_defined(atom_types, mask)
    out = np.where(defined, 0.0, np.nan)
    for b in np.nonzero(defined & (errors != 0).any(1))[0].tolist():
        n = int(mask[b].sum())
        types = atom_types[b, :n]
        ii, jj, up, down = _candidates(100.0 * d[b, :n, :n], types, orders[b, :n, :n], 100.0 * max_shift)
        need = -errors[b, :n]
        costs = np.unique(np.concatenate([up[np.isfinite(up)], down[np.isfinite(down)]]))
        costs = costs[costs <= 100.0 * max_shift]

        def ok(limit: float, ii=ii, jj=jj, up=up, down=down, need=need) -> bool:
            signs = [tuple(v for v, c in ((1, u), (-1, w)) if c <= limit) for u, w in zip(up, down, strict=True)]
            use = [k for k, s in enumerate(signs) if s]
            return _feasible(need, ii[use], jj[use], [signs[k] for k in use], node_limit)

        try:
            if not len(costs) or not ok(costs[-1]):
                out[b] = np.inf
                continue
            lo, hi = 0, len(costs) - 1  # feasibility grows with the limit: the first feasible cost
            while lo < hi:
                mid = (lo + hi) // 2
                if ok(costs[mid]):
                    hi = mid
                else:
                    lo = mid + 1
            out[b] = costs[lo] / 100.0
        except (_SearchLimit, RecursionError):  # a huge molecule's group can be deeper than Python's stack
            out[b] = np.nan
    return out


def failure_report(batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], max_shift: float = 0.1) -> dict:
    """Why the molecules of padded batches ``(positions, atom_types, mask)`` are EDM-unstable (module docstring).
    Molecules with elements other than H, C, N, O, F are counted as ``undefined`` and left out. Percentages are of
    the molecules where stability is defined unless named "share_of_unstable"."""
    shifts, odd, n_bad, kinds = [], [], [], Counter()
    undefined = bonded_pairs = ambiguous = 0
    sums = {f"{a}{'-=#'[o - 1]}{b}": np.zeros(3) for a, b, o in BONDS}  # count, sum, sum of squares (Å)
    for pos, typ, mask in batches:
        pos, typ, mask = np.asarray(pos, np.float32), np.asarray(typ), np.asarray(mask, bool)
        defined = stability_defined(typ, mask)
        undefined += int((~defined).sum())
        pos, typ, mask = pos[defined], typ[defined], mask[defined]
        if not len(pos):
            continue
        d = pairwise_distances(pos)
        orders = edm_bond_orders(pos, typ, mask, d)
        errors = valence_errors(pos, typ, mask, orders)
        shifts.append(repair_shift(pos, typ, mask, max_shift=max_shift, distances=d))
        types = np.where(mask, typ, 0)
        odd.append(np.where(mask, VALENCE[types], 0).sum(1) % 2 == 1)
        bad = mask & (errors != 0)
        n_bad.append(bad.sum(1))
        kinds.update(zip(typ[bad].tolist(), (VALENCE[typ[bad]] + errors[bad]).tolist(), strict=True))
        pair = mask[:, :, None] & mask[:, None, :] & np.triu(np.ones(mask.shape[1:] * 2, bool), 1)[None]
        ti, tj = types[:, :, None], types[:, None, :]
        for a, b, o in BONDS:
            ia, ib = ELEMENTS.index(a), ELEMENTS.index(b)
            x = d[pair & (orders == o) & (((ti == ia) & (tj == ib)) | ((ti == ib) & (tj == ia)))].astype(np.float64)
            sums[f"{a}{'-=#'[o - 1]}{b}"] += (x.size, x.sum(), (x * x).sum())
        bonded = pair & (orders > 0)
        near = np.zeros_like(bonded)
        for k in range(3):
            thr = _THRESHOLDS[k][ti, tj]
            near |= (thr > 0) & (np.abs(100.0 * d - thr) <= AMBIGUOUS_PM)
        bonded_pairs += int(bonded.sum())
        ambiguous += int((near & bonded).sum())
    shift = np.concatenate(shifts) if shifts else np.zeros(0)
    odd_ = np.concatenate(odd) if odd else np.zeros(0, bool)
    n_bad_ = np.concatenate(n_bad) if n_bad else np.zeros(0, int)
    n = len(shift)
    unstable = shift != 0
    n_unstable = int(unstable.sum())

    def pct(count, of):
        return 100.0 * float(count) / of if of else None

    bins, prev = [], 0.0
    for s in REPAIR_SHIFTS:
        k = int((unstable & (shift > prev) & (shift <= s)).sum())
        bins.append({"up_to": s, "molecules": k, "share_of_unstable": pct(k, n_unstable),
                     "stable_if_repaired": pct(((shift <= s) & np.isfinite(shift)).sum(), n)})
        prev = s
    beyond = np.isinf(shift)
    total_bad = int(n_bad_.sum())
    lengths = {}
    for name, (c, sx, sxx) in sums.items():
        mean = sx / c if c else None
        lengths[name] = {"bonds": int(c), "mean": mean,
                         "std": float(np.sqrt(max(sxx / c - mean * mean, 0.0))) if c else None}
    return {
        "molecules": n, "undefined": undefined, "mol_stable": pct((shift == 0).sum(), n), "unstable": n_unstable,
        "repair": bins,
        "beyond": {"molecules": int(beyond.sum()), "share_of_unstable": pct(beyond.sum(), n_unstable),
                   "odd_valence_sum": int((beyond & odd_).sum())},
        # % of all molecules never stable whatever the geometry; of those, with one unstable atom: a radical
        "odd_valence_sum": pct(odd_.sum(), n), "odd_valence_sum_one_unstable_atom": pct((odd_ & (n_bad_ == 1)).sum(), n),
        "search_gave_up": int(np.isnan(shift).sum()),
        "unstable_atoms": total_bad,
        "unstable_atoms_per_unstable_molecule": total_bad / n_unstable if n_unstable else None,
        "atom_kinds": [{"kind": f"{SYMBOLS[t]} with {v} (needs {VALENCE[t]})", "atoms": c, "share": pct(c, total_bad)}
                       for (t, v), c in kinds.most_common()],
        "bond_lengths": lengths,
        "ambiguous_bonds": pct(ambiguous, bonded_pairs),
    }
