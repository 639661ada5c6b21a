"""Packing chains into the compact training format of ``ChainSet`` (``.npz``), with the project's filters and a
sequence-cluster split: ``reed-protein pack DIR --out mine.npz`` for fine-tuning on your own structures.

Format: coordinates as int16 hundredths of an Å around each chain's CA centroid (missing atoms = -32768), the
sequences as one string with offsets, and split / cluster / source per chain.

Filters (the same as the project's data, ``../shared/data/protein``): 30-500 residues; at least 90 % with all four
backbone atoms; at most 10 % X; median consecutive CA-CA distance in [3.6, 4.0] Å; duplicates dropped (a name
seen before, or the same sequence with the same first five CA positions).

Clusters: longest chain first, each chain is compared with the ten representatives that share the most 3-mers
with it; it is linked to every one whose Smith-Waterman alignment (BLOSUM62, gaps -11/-1) has >= 30 % identity
and covers >= 50 % of both chains, and becomes a representative itself when it links to none. Clusters are the
connected components (single linkage, so that similar chains do not straddle two splits). This approximates the
project's MMseqs2 clustering (``--min-seq-id 0.3 -c 0.5``); MMseqs2 is not a dependency. Whole clusters go into
one split.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import MISSING, SPLITS

MIN_LENGTH, MAX_LENGTH = 30, 500


@dataclass(frozen=True)
class PackRecord:
    """One chain to pack: ``coords`` (L,4,3) N/CA/C/O in Å, NaN where missing."""

    name: str
    seq: str
    coords: np.ndarray
    source: str = "user"


def _quantized(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CA centroid, coordinates in hundredths of an Å around it, rounded; NaN where missing)."""
    c = np.nanmean(coords[:, 1], axis=0)
    return c, np.round((coords - c) * 100.0)


def chain_filter(seq: str, coords: np.ndarray, min_length: int = MIN_LENGTH, max_length: int = MAX_LENGTH
                 ) -> str | None:
    """Why a chain fails the project's filters (a short reason), or None when it passes."""
    n = len(seq)
    if not min_length <= n <= max_length:
        return f"length outside {min_length}-{max_length}"
    if np.isfinite(coords).all(axis=(1, 2)).mean() < 0.9:
        return "under 90 % complete backbones"
    if seq.count("X") > 0.1 * n:
        return "over 10 % X"
    ca = coords[:, 1]
    d = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)
    d = d[np.isfinite(d)]
    if not d.size or not 3.6 <= float(np.median(d)) <= 4.0:
        return "median CA-CA distance outside 3.6-4.0 A"
    if np.nanmax(np.abs(_quantized(coords)[1])) >= 32767:
        return "extent over 327 A (int16 packing)"
    return None


def dedupe(records: list[PackRecord]) -> tuple[list[PackRecord], int]:
    """The first record of each name, without repeats of (sequence, first five CA positions); and how many went."""
    names, keys, kept = set(), set(), []
    for r in records:
        key = (r.seq, np.round(r.coords[:5, 1], 2).tobytes())
        if r.name in names or key in keys:
            continue
        names.add(r.name)
        keys.add(key)
        kept.append(r)
    return kept, len(records) - len(kept)


def _kmer_sets(seqs: list[str], k: int = 3) -> np.ndarray:
    """(N, 20^k) bool: which k-mers of the 20 amino acids each sequence holds."""
    from .constants import AA_TO_INDEX

    out = np.zeros((len(seqs), 20 ** k), bool)
    for i, s in enumerate(seqs):
        codes = np.array([AA_TO_INDEX.get(a, 20) for a in s])
        if len(codes) < k:
            continue
        win = np.lib.stride_tricks.sliding_window_view(codes, k)
        win = win[(win < 20).all(1)]
        out[i, (win * (20 ** np.arange(k - 1, -1, -1))).sum(1)] = True
    return out


def cluster(seqs: list[str], min_identity: float = 0.3, min_coverage: float = 0.5, candidates: int = 10
            ) -> np.ndarray:
    """Cluster number of each sequence, 0.. in order of first appearance (see the module doc)."""
    from biotite.sequence import ProteinSequence
    from biotite.sequence.align import SubstitutionMatrix, align_optimal

    matrix = SubstitutionMatrix.std_protein_matrix()
    proteins = [ProteinSequence(s.replace("U", "C").replace("O", "K")) for s in seqs]
    kmers = _kmer_sets(seqs).astype(np.float32)
    parent, reps = np.arange(len(seqs)), []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in sorted(range(len(seqs)), key=lambda j: (-len(seqs[j]), j)):
        linked = False
        if reps:
            shared = kmers[reps] @ kmers[i]
            for r in np.asarray(reps)[np.argsort(-shared, kind="stable")[:candidates]]:
                if root(i) != root(r) and _similar(proteins[i], proteins[r], matrix, align_optimal, min_identity,
                                                   min_coverage):
                    parent[root(r)] = root(i)
                    linked = True
                elif root(i) == root(r):
                    linked = True
        if not linked:
            reps.append(i)
    roots = [root(i) for i in range(len(seqs))]
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _similar(a, b, matrix, align_optimal, min_identity: float, min_coverage: float) -> bool:
    aln = align_optimal(a, b, matrix, gap_penalty=(-11, -1), local=True, max_number=1)[0]
    trace = aln.trace
    both = (trace >= 0).all(1)
    if not both.any():
        return False
    ident = float((a.code[trace[both, 0]] == b.code[trace[both, 1]]).mean())
    cov_a = (trace[both, 0].max() - trace[both, 0].min() + 1) / len(a)
    cov_b = (trace[both, 1].max() - trace[both, 1].min() + 1) / len(b)
    return ident >= min_identity and min(cov_a, cov_b) >= min_coverage


def split_clusters(labels: np.ndarray, valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
                   ) -> np.ndarray:
    """Split code per chain (``SPLITS``): whole clusters, in a seeded random order, fill test and then valid to
    about their fractions of the chains; the rest is train."""
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"split fractions must be >= 0 and sum below 1, got valid {valid_fraction}, test {test_fraction}")
    sizes = Counter(labels.tolist())
    order = np.random.default_rng(seed).permutation(sorted(sizes))
    split, filled = {}, {"test": 0, "valid": 0}
    goal = {"test": test_fraction * len(labels), "valid": valid_fraction * len(labels)}
    for c in order.tolist():
        name = next((s for s in ("test", "valid") if filled[s] + sizes[c] / 2 <= goal[s]), "train")
        split[c] = SPLITS[name]
        if name != "train":
            filled[name] += sizes[c]
    return np.array([split[c] for c in labels.tolist()], np.int8)


def write_packed(path: str | os.PathLike, records: list[PackRecord], split: np.ndarray, clusters: np.ndarray,
                 ts50: np.ndarray | None = None) -> Path:
    """Write ``records`` in the ``ChainSet`` format (atomically)."""
    import io

    from reed_core.io import atomic_write

    coords, centroids, sources = [], [], {}
    for r in records:
        c, q = _quantized(r.coords)
        if np.nanmax(np.abs(q)) >= 32767:
            raise ValueError(f"{r.name}: extent too large for int16 packing")
        coords.append(np.where(np.isnan(q), MISSING, q).astype(np.int16))
        centroids.append(c)
        sources.setdefault(r.source, len(sources))
    lengths = np.array([len(r.seq) for r in records], np.int64)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, names=np.array([r.name for r in records]), seq="".join(r.seq for r in records),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        coords=np.concatenate(coords) if coords else np.zeros((0, 4, 3), np.int16),
        centroids=np.array(centroids, np.float64).reshape(-1, 3), split=np.asarray(split, np.int8),
        cluster=np.asarray(clusters, np.int32), source=np.array([sources[r.source] for r in records], np.int8),
        source_names=np.array(list(sources)), ts50=np.zeros(len(records), bool) if ts50 is None else np.asarray(ts50))
    return atomic_write(path, buf.getvalue())


__all__ = ["PackRecord", "chain_filter", "cluster", "dedupe", "split_clusters", "write_packed"]
