"""Sequence recovery of one checkpoint as a function of the number of sampling steps:
``uv run benchmarks/protein_sampling_steps.py [--checkpoint DIR] [--steps 5,10,20,50,100,500]``.

Measures whether the sampler's default (20 steps) loses recovery against the paper's 500 steps, on TS50 and the
test split (temperature 0.1, same seed), and the design time per step count."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_protein.data import ChainSet  # noqa: E402
from reed_protein.evaluation import evaluate  # noqa: E402
from reed_protein.loading import default_checkpoint, load_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped REED model)")
    p.add_argument("--steps", default="5,10,20,50,100,500", help="comma-separated step counts")
    p.add_argument("--splits", default="ts50,test", help="splits to evaluate")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds averaged per setting")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/protein_sampling_steps.json")
    args = p.parse_args(argv)
    chains = ChainSet()
    model = load_model(args.checkpoint or default_checkpoint(), device=args.device)
    rows, result = [], {"device": args.device, "seeds": args.seeds, "rows": []}
    for steps in [int(s) for s in args.steps.split(",")]:
        row = {"steps": steps}
        for split in args.splits.split(","):
            t0 = time.perf_counter()
            recs = [evaluate(model, chains, chains.split(split), num_steps=steps, seed=s, device=args.device)["recovery"]
                    for s in range(args.seeds)]
            row[f"{split}_recovery"] = sum(recs) / len(recs)
            row[f"{split}_seconds"] = (time.perf_counter() - t0) / args.seeds
        result["rows"].append(row)
        rows.append([steps] + [row[f"{s}_recovery"] for s in args.splits.split(",")]
                    + [row[f"{s}_seconds"] for s in args.splits.split(",")])
        print(rows[-1], flush=True)
    header = ["steps"] + [f"{s} recov %" for s in args.splits.split(",")] + [f"{s} s" for s in args.splits.split(",")]
    print(format_table(header, rows))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
