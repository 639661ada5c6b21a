"""QM9 from the ``qm9pack`` wheel (130,831 molecules with DFT geometries in Å), EDM's split, and a cached
graph build (bonds and formal charges) for training.

EDM's split: qm9pack already leaves out the 3,054 "uncharacterized" molecules of QM9, so its 130,831 molecules
in index order are exactly EDM's; ``np.random.seed(0)``, permute, train = first 100,000, valid = next 17,748,
test = last 13,083.

The build runs once (progress bar) into a cache directory (``REED_MOLECULE_CACHE`` or the platform cache dir)
and is verified with a SHA-256 checksum on every load.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import CHARGE_TO_INDEX, SYMBOL_INDEX

log = logging.getLogger(__name__)

NUM_MOLECULES = 130_831
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
PROPERTIES = ("Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2",
              "ZPVE_au", "InternalEnergy_0K_au", "Heatcapacity_Cv_cal_mol_K")
RAW_VERSION = 1
CACHE_VERSION = 2  # 2: explicit-hydrogen valence check of every bond graph
GRAPH_SOURCES = ("distance table", "RDKit DetermineBonds")


class QM9Error(RuntimeError):
    """The QM9 source or cache is missing or corrupt."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``path``, else ``$REED_MOLECULE_CACHE``, else the platform user cache dir (the XDG
    default where ``platformdirs`` is missing: a torch-only GPU machine training from the pack)."""
    if path is None:
        path = os.environ.get("REED_MOLECULE_CACHE")
    if path is None:
        try:
            import platformdirs
        except ImportError:
            path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reed-molecule"
        else:
            path = platformdirs.user_cache_dir("reed-molecule")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _qm9pack_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise QM9Error("the qm9pack package is not installed (pip install qm9pack)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@dataclass(frozen=True)
class Molecules:
    """Variable-size molecules stored flat: atoms of molecule i are ``offsets[i]:offsets[i+1]``."""

    positions: np.ndarray  # (A,3) float32, Å
    atom_types: np.ndarray  # (A,) int8 element index
    offsets: np.ndarray  # (M+1,) int64
    index: np.ndarray  # (M,) QM9 index (1-based gdb id)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, ids: np.ndarray) -> Molecules:
        ids = np.asarray(ids)
        counts = self.num_atoms[ids]
        gather = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in ids]) if len(ids) else np.zeros(0, int)
        return Molecules(self.positions[gather], self.atom_types[gather],
                         np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.index[ids])

    def padded(self, ids: np.ndarray | None = None, max_atoms: int | None = None):
        """(positions (B,N,3), atom_types (B,N), mask (B,N)) for molecules ``ids`` (all by default)."""
        ids = np.arange(len(self)) if ids is None else np.asarray(ids)
        counts = self.num_atoms[ids]
        n = int(max_atoms or counts.max())
        mask = np.arange(n)[None, :] < counts[:, None]
        flat = (self.offsets[ids][:, None] + np.arange(n)[None, :])[mask]
        pos = np.zeros((len(ids), n, 3), np.float32)
        typ = np.zeros((len(ids), n), np.int64)
        pos[mask] = self.positions[flat]
        typ[mask] = self.atom_types[flat]
        return pos, typ, mask


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_checked(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    path.with_suffix(".sha256").write_text(_sha256(path))


def _load_checked(path: Path) -> dict[str, np.ndarray] | None:
    digest = path.with_suffix(".sha256")
    if not path.is_file() or not digest.is_file():
        return None
    if _sha256(path) != digest.read_text().strip():
        log.warning("checksum mismatch for %s; rebuilding", path)
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _parse_qm9pack(progress: bool) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    csv.field_size_limit(1 << 30)
    data = _qm9pack_dir()
    files = [data / f"qm9_part{i}.csv" for i in (1, 2, 3)]
    rows = []
    bar = tqdm(total=NUM_MOLECULES, desc="reading QM9 (qm9pack)", disable=not progress, unit="mol")
    for f in files:
        if not f.is_file():
            raise QM9Error(f"{f}: missing from the qm9pack installation")
        with open(f, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            col = {name: i for i, name in enumerate(header)}
            for r in reader:
                rows.append((int(r[col["Index"]]), r[col["SMILES"]], r[col["Elements"]], r[col["XYZ_Ang"]],
                             [float(r[col[p]]) for p in PROPERTIES]))
                bar.update(1)
    bar.close()
    if len(rows) != NUM_MOLECULES:
        raise QM9Error(f"qm9pack holds {len(rows)} molecules, expected {NUM_MOLECULES}")
    rows.sort(key=lambda r: r[0])
    counts, types, positions = [], [], []
    for idx, _smi, elements, xyz, _ in rows:
        el = json.loads(elements.replace("'", '"'))
        flat = [float(v) for v in xyz.replace("[", "").replace("]", "").split(",")]  # qm9pack writes "0."
        xyz_arr = [flat[k:k + 3] for k in range(0, len(flat), 3)]
        if len(el) != len(xyz_arr) or len(flat) % 3:
            raise QM9Error(f"qm9pack molecule {idx}: {len(el)} elements but {len(xyz_arr)} coordinates")
        counts.append(len(el))
        types.extend(SYMBOL_INDEX[e] for e in el)
        positions.extend(xyz_arr)
    return {
        "positions": np.asarray(positions, np.float32),
        "atom_types": np.asarray(types, np.int8),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "index": np.asarray([r[0] for r in rows], np.int64),
        "properties": np.asarray([r[4] for r in rows], np.float64),
        "smiles": np.asarray([r[1] for r in rows]),
    }


def load_raw(cache: str | os.PathLike | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """All 130,831 molecules in index order (cached after the first call)."""
    path = cache_dir(cache) / f"qm9_raw_v{RAW_VERSION}.npz"
    arrays = _load_checked(path)
    if arrays is None:
        arrays = _parse_qm9pack(progress)
        _save_checked(path, **arrays)
    return arrays


def edm_split() -> dict[str, np.ndarray]:
    """EDM's split as indices into the 130,831 molecules in QM9-index order."""
    rng_state = np.random.get_state()
    try:
        np.random.seed(0)
        perm = np.random.permutation(NUM_MOLECULES)
    finally:
        np.random.set_state(rng_state)
    a = SPLIT_SIZES["train"]
    b = a + SPLIT_SIZES["valid"]
    return {"train": perm[:a], "valid": perm[a:b], "test": perm[b:]}


def molecules(split: str | None = None, cache: str | os.PathLike | None = None, progress: bool = True) -> Molecules:
    """Molecules of one EDM split (or all of them)."""
    raw = load_raw(cache, progress)
    mols = Molecules(raw["positions"], raw["atom_types"], raw["offsets"], raw["index"])
    if split is None:
        return mols
    splits = edm_split()
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
    return mols.subset(splits[split])


# ------------------------------------------------------------------------------------------- graph build


_BASE_VALENCE = np.array([1, 4, 3, 2, 1])  # H, C, N, O, F
_CHARGEABLE = np.array([False, False, True, True, False])  # N+ / N- / O+ / O- only


def valence_ok(types: np.ndarray, orders: np.ndarray, charges: np.ndarray) -> bool:
    """Whether every atom's bond-order sum is its element's valence (N and O shifted by their formal charge) with
    no implicit hydrogen: QM9 lists every H, so an under-bonded atom means a wrong bond graph."""
    valence = orders.sum(1)
    expected = _BASE_VALENCE[types] + np.where(_CHARGEABLE[types], charges, 0)
    return bool(np.all(valence == expected) and np.all(charges[~_CHARGEABLE[types]] == 0))


def _graph_of(types: np.ndarray, positions: np.ndarray):
    """(bond-order matrix, formal charges, EDM's SMILES, source) or None. EDM's distance table first; when its graph
    is not valence-exact (checked without implicit hydrogens), RDKit's bond-order determination with the known
    total charge 0; None when that fails too."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from .chem import build_mol, edm_bond_orders, mol_to_smiles
    from .constants import ELEMENTS

    n = len(types)
    mask = np.ones((1, n), bool)
    orders = edm_bond_orders(positions[None], types[None], mask)[0]
    zero = np.zeros(n, np.int64)
    smiles = mol_to_smiles(build_mol(types, orders))  # EDM's SMILES of the molecule (novelty compares with these)
    if smiles is not None and valence_ok(types, orders, zero):
        return orders, zero, smiles, 0
    xyz = f"{n}\n\n" + "\n".join(f"{ELEMENTS[t]} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for t, p in zip(types, positions, strict=True))
    try:
        m = Chem.MolFromXYZBlock(xyz)
        rdDetermineBonds.DetermineBonds(m, charge=0)
        Chem.SanitizeMol(m)
        Chem.Kekulize(m, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 - RDKit raises many unrelated types here
        return None
    orders = np.zeros((n, n), np.int64)
    for bond in m.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        orders[i, j] = orders[j, i] = int(round(bond.GetBondTypeAsDouble()))
    charges = np.array([a.GetFormalCharge() for a in m.GetAtoms()], np.int64)
    if np.any(orders > 3) or any(c not in CHARGE_TO_INDEX for c in charges) or not valence_ok(types, orders, charges):
        return None
    return orders, charges, smiles or mol_to_smiles(build_mol(types, orders, charges)) or "", 1


def _graphs_path(cache: str | os.PathLike | None) -> Path:
    return cache_dir(cache) / f"qm9_graphs_v{CACHE_VERSION}.npz"


def graphs_cached(cache: str | os.PathLike | None = None) -> bool:
    """Whether the graph build (and with it the training SMILES) is already in the cache."""
    return _graphs_path(cache).is_file()


def build_graphs(cache: str | os.PathLike | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Bonds (upper-triangle edge lists), formal charges and a keep-flag for every molecule (cached)."""
    path = _graphs_path(cache)
    arrays = _load_checked(path)
    if arrays is not None:
        return arrays
    from tqdm.auto import tqdm

    mols = molecules(None, cache, progress)
    keep = np.zeros(len(mols), bool)
    charges = np.zeros(len(mols.atom_types), np.int8)
    edges, edge_offsets, smiles, source = [], [0], [], np.zeros(len(mols), np.int8)
    for m in tqdm(range(len(mols)), desc="building QM9 bonds/charges", disable=not progress, unit="mol"):
        lo, hi = mols.offsets[m], mols.offsets[m + 1]
        out = _graph_of(mols.atom_types[lo:hi].astype(np.int64), mols.positions[lo:hi])
        if out is None:
            edge_offsets.append(edge_offsets[-1])
            smiles.append("")
            source[m] = -1
            continue
        orders, q, smi, source[m] = out
        keep[m] = True
        charges[lo:hi] = q
        ii, jj = np.nonzero(np.triu(orders, 1))
        edges.append(np.stack([ii, jj, orders[ii, jj]], 1))
        edge_offsets.append(edge_offsets[-1] + len(ii))
        smiles.append(smi)
    arrays = {
        "keep": keep,
        "charges": charges,
        "edges": np.concatenate(edges).astype(np.int16),
        "edge_offsets": np.asarray(edge_offsets, np.int64),
        "smiles": np.asarray(smiles),
        "source": source,
    }
    _save_checked(path, **arrays)
    log.info("QM9 graphs: %s", graph_counts(arrays))
    return arrays


def graph_counts(graphs: dict[str, np.ndarray]) -> dict[str, int]:
    """How many bond graphs came from each source, and how many molecules were dropped."""
    src = graphs["source"]
    return {**{name: int((src == k).sum()) for k, name in enumerate(GRAPH_SOURCES)}, "dropped": int((src < 0).sum())}


def training_smiles(cache: str | os.PathLike | None = None, progress: bool = True) -> set[str]:
    """Canonical SMILES of the rebuilt training split (EDM builds them from distance-based bonds)."""
    graphs = build_graphs(cache, progress)
    ids = edm_split()["train"]
    return {s for s in graphs["smiles"][ids].tolist() if s}
