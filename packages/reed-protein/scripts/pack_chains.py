"""Pack ../shared/data/protein (chains.jsonl.gz + splits.json, with its MMseqs2 split) into the compact
``data/chains.npz`` used by reed-protein, in the format of ``reed_protein.packing.write_packed``.

``uv run packages/reed-protein/scripts/pack_chains.py ../shared/data/protein``
"""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from reed_protein.data import SPLITS
from reed_protein.packing import PackRecord, write_packed

OUT = Path(__file__).resolve().parents[1] / "data" / "chains.npz"
ATOMS = ("N", "CA", "C", "O")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="folder with chains.jsonl.gz and splits.json")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    splits = json.loads((args.source / "splits.json").read_text())
    ts50 = set(splits["test_ts50"])
    records, split, cluster = [], [], []
    clusters: dict[str, int] = {}
    with gzip.open(args.source / "chains.jsonl.gz", "rt") as fh:
        for line in fh:
            r = json.loads(line)
            xyz = np.array([[[np.nan] * 3 if a is None else a for a in r["coords"][k]] for k in ATOMS], np.float64)
            xyz = xyz.transpose(1, 0, 2)  # (L,4,3)
            if xyz.shape[0] != len(r["seq"]):
                raise ValueError(f"{r['name']}: {len(r['seq'])} residues but {xyz.shape[0]} coordinates")
            records.append(PackRecord(r["name"], r["seq"], xyz, r["source"]))
            split.append(SPLITS[r["split"]])
            cluster.append(clusters.setdefault(r["cluster"], len(clusters)))
    write_packed(args.out, records, np.array(split), np.array(cluster), np.array([r.name in ts50 for r in records]))
    residues = sum(len(r.seq) for r in records)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {len(records)} chains, {residues} residues")


if __name__ == "__main__":
    main()
