"""A compact, self-checking training pack of QM9 (``reed-molecule pack``): everything training needs, written once
with RDKit, read with numpy alone, so that training, the 3-D teacher and sampling run where only torch is installed
(a GPU machine that gets the repository and this file).

Contents (all 130,831 molecules in QM9 index order, so EDM's split indexes it directly): positions as int16
thousandths of an Å (round-off <= 0.0005 Å, checked when written), element and formal-charge indices, the bond
graphs (i, j, order) of ``qm9.build_graphs`` with its keep flags, and the 2-D teacher's raw features (Morgan counts
stored sparse, descriptors in float32: float16 lost up to 0.8 % of a descriptor's spread). A SHA-256 of the arrays is
stored inside and verified on every load.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from .qm9 import QM9Error

PACK_VERSION = 1
POSITION_SCALE = 1000.0  # int16 units per Å
_DEFAULT = Path(__file__).resolve().parents[2] / "data" / "qm9_pack.npz"


class PackError(QM9Error):
    """The training pack is missing, of another version, or corrupt."""


def default_pack_path() -> Path:
    """``$REED_MOLECULE_PACK`` or the package's ``data/qm9_pack.npz`` (not in git: ``reed-molecule pack`` writes it)."""
    return Path(os.environ.get("REED_MOLECULE_PACK", _DEFAULT))


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def build_pack(cache: str | os.PathLike | None = None, progress: bool = True, feature_rows: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """The pack's arrays from the RDKit build (``qm9.load_raw`` + ``qm9.build_graphs`` + 2-D features of every
    kept molecule, or of ``feature_rows`` only: a partial pack for tests)."""
    from tqdm.auto import tqdm

    from .qm9 import build_graphs, load_raw
    from .teachers import DESCRIPTORS, FP_BITS, graph2d_features

    raw, graphs = load_raw(cache, progress), build_graphs(cache, progress)
    q = np.round(raw["positions"].astype(np.float64) * POSITION_SCALE)
    if np.abs(q).max() >= 32767:
        raise PackError("a QM9 coordinate is beyond the int16 range of the pack")
    offsets, eo = raw["offsets"], graphs["edge_offsets"]
    bits, counts, nnz = [], [], np.zeros(len(offsets) - 1, np.int16)
    desc = np.zeros((len(offsets) - 1, len(DESCRIPTORS)), np.float32)
    has = graphs["keep"].copy()
    if feature_rows is not None:
        has &= np.isin(np.arange(len(has)), feature_rows)
    for m in tqdm(np.flatnonzero(has), desc="2-D teacher features", disable=not progress, unit="mol"):
        lo, hi = offsets[m], offsets[m + 1]
        n = hi - lo
        orders = np.zeros((n, n), np.int64)
        e = graphs["edges"][eo[m]:eo[m + 1]].astype(np.int64)
        orders[e[:, 0], e[:, 1]] = orders[e[:, 1], e[:, 0]] = e[:, 2]
        f = graph2d_features(raw["atom_types"][lo:hi].astype(np.int64), orders, graphs["charges"][lo:hi])
        c = np.rint(np.expm1(f[:FP_BITS])).astype(np.int64)
        (nz,) = np.nonzero(c)
        bits.append(nz.astype(np.int16))
        counts.append(np.minimum(c[nz], 255).astype(np.uint8))
        nnz[m] = len(nz)
        desc[m] = f[FP_BITS:]
    return {
        "version": np.int64(PACK_VERSION), "num_atoms": np.diff(offsets).astype(np.uint8),
        "index": raw["index"].astype(np.int32), "positions": q.astype(np.int16),
        "atom_types": raw["atom_types"].astype(np.int8), "charges": graphs["charges"].astype(np.int8),
        "keep": graphs["keep"], "num_edges": np.diff(eo).astype(np.uint8), "edges": graphs["edges"].astype(np.int8),
        "graph_source": graphs["source"].astype(np.int8), "fp_nnz": nnz, "fp_bits": np.concatenate(bits),
        "fp_counts": np.concatenate(counts), "descriptors": desc, "has_features": has,
    }


PACK_ARRAYS = ("version", "num_atoms", "index", "positions", "atom_types", "charges", "keep", "num_edges", "edges",
               "graph_source", "fp_nnz", "fp_bits", "fp_counts", "descriptors", "has_features")


def write_pack(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` compressed with their SHA-256 (atomically)."""
    from reed_core.io import atomic_write

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, sha256=np.array(_digest(arrays)))
    return atomic_write(path, buf.getvalue())


def read_pack(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The pack's arrays, verified (version and SHA-256)."""
    path = Path(path) if path is not None else default_pack_path()
    if not path.is_file():
        raise PackError(f"{path}: no QM9 training pack; write it once with `reed-molecule pack` (needs RDKit)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise PackError(f"{path}: not a readable training pack ({e})") from None
    stored = str(arrays.pop("sha256", ""))
    if int(arrays.get("version", -1)) != PACK_VERSION:
        raise PackError(f"{path}: pack version {int(arrays.get('version', -1))}, expected {PACK_VERSION}; "
                        "rebuild it with `reed-molecule pack`")
    if missing := sorted(set(PACK_ARRAYS) - set(arrays)):
        raise PackError(f"{path}: a pack of another layout (no {', '.join(missing)}); rebuild it with `reed-molecule pack`")
    if _digest(arrays) != stored:
        raise PackError(f"{path}: checksum mismatch (a corrupt or edited pack); rebuild it with `reed-molecule pack`")
    return arrays


def unpack(arrays: dict[str, np.ndarray]):
    """(``qm9.Molecules`` of all molecules, the graph dict of ``qm9.build_graphs``, the 2-D feature lookup)."""
    from .qm9 import Molecules

    offsets = np.concatenate([[0], np.cumsum(arrays["num_atoms"].astype(np.int64))])
    mols = Molecules(arrays["positions"].astype(np.float32) / POSITION_SCALE, arrays["atom_types"], offsets,
                     arrays["index"].astype(np.int64))
    graphs = {"keep": arrays["keep"], "charges": arrays["charges"], "edges": arrays["edges"].astype(np.int16),
              "edge_offsets": np.concatenate([[0], np.cumsum(arrays["num_edges"].astype(np.int64))]),
              "source": arrays["graph_source"]}
    return mols, graphs, Graph2DLookup(arrays)


class Graph2DLookup:
    """Raw 2-D teacher features (log1p Morgan counts + descriptors) of molecules by QM9 row, from the pack."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        from .teachers import FP_BITS

        self.fp_bits = FP_BITS
        self.offsets = np.concatenate([[0], np.cumsum(arrays["fp_nnz"].astype(np.int64))])
        self.bits, self.counts = arrays["fp_bits"].astype(np.int64), arrays["fp_counts"].astype(np.float32)
        self.descriptors, self.has = arrays["descriptors"], arrays["has_features"]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if not self.has[rows].all():
            raise PackError(f"the pack has no 2-D features for molecule rows {rows[~self.has[rows]][:5].tolist()}")
        out = np.zeros((len(rows), self.fp_bits + self.descriptors.shape[1]), np.float32)
        lo, hi = self.offsets[rows], self.offsets[rows + 1]
        n = hi - lo
        which = np.repeat(np.arange(len(rows)), n)
        flat = np.arange(n.sum()) + np.repeat(lo - (np.cumsum(n) - n), n)  # lo[r] .. hi[r] of every row r
        out[which, self.bits[flat]] = np.log1p(self.counts[flat])
        out[:, self.fp_bits:] = self.descriptors[rows]
        return out


__all__ = ["Graph2DLookup", "PackError", "build_pack", "default_pack_path", "read_pack", "unpack", "write_pack"]
