"""Pack ../shared/data/protein (chains.jsonl.gz + splits.json) into the compact ``data/chains.npz`` used by
reed-protein: coordinates as int16 hundredths of an Å around each chain's centroid (missing atoms = -32768),
sequences as one string with offsets, split / cluster / source per chain.

``uv run packages/reed-protein/scripts/pack_chains.py ../shared/data/protein``
"""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "data" / "chains.npz"
ATOMS = ("N", "CA", "C", "O")
MISSING = -32768


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="folder with chains.jsonl.gz and splits.json")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    splits = json.loads((args.source / "splits.json").read_text())
    ts50 = set(splits["test_ts50"])
    names, seqs, centroids, coords, split, cluster, source = [], [], [], [], [], [], []
    clusters: dict[str, int] = {}
    sources: dict[str, int] = {}
    with gzip.open(args.source / "chains.jsonl.gz", "rt") as fh:
        for line in fh:
            r = json.loads(line)
            xyz = np.array([[[np.nan] * 3 if a is None else a for a in r["coords"][k]] for k in ATOMS], np.float64)
            xyz = xyz.transpose(1, 0, 2)  # (L,4,3)
            if xyz.shape[0] != len(r["seq"]):
                raise ValueError(f"{r['name']}: {len(r['seq'])} residues but {xyz.shape[0]} coordinates")
            c = np.nanmean(xyz[:, 1], axis=0)
            q = np.round((xyz - c) * 100.0)
            if np.nanmax(np.abs(q)) >= 32767:
                raise ValueError(f"{r['name']}: extent too large for int16 packing")
            coords.append(np.where(np.isnan(q), MISSING, q).astype(np.int16))
            names.append(r["name"])
            seqs.append(r["seq"])
            centroids.append(c)
            split.append({"train": 0, "valid": 1, "test": 2}[r["split"]])
            cluster.append(clusters.setdefault(r["cluster"], len(clusters)))
            source.append(sources.setdefault(r["source"], len(sources)))
    lengths = np.array([len(s) for s in seqs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        names=np.array(names), seq="".join(seqs), offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        coords=np.concatenate(coords), centroids=np.array(centroids, np.float64), split=np.array(split, np.int8),
        cluster=np.array(cluster, np.int32), source=np.array(source, np.int8),
        source_names=np.array(list(sources)), ts50=np.array([n in ts50 for n in names]),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {len(names)} chains, {lengths.sum()} residues")


if __name__ == "__main__":
    main()
