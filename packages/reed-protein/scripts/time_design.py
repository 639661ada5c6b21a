"""Design latency (8 x 100 residues, 10 / 20 steps) and conditional-probs time (100 / 300 residues) of the shipped
model with whatever reed_protein is importable (PYTHONPATH picks a worktree); prints one JSON line.
Usage: python packages/reed-protein/scripts/time_design.py [THREADS]"""

import json
import sys
import time

import numpy as np
import torch

import reed_protein.design as D
from reed_protein.constants import X_INDEX
from reed_protein.data import ChainSet
from reed_protein.loading import default_checkpoint, load_model
from reed_protein.sampler import design_batch


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    model = load_model(default_checkpoint()).eval()
    chains = ChainSet()
    ts = chains.split("test")
    lengths = np.diff(chains.offsets)[ts]

    def pick(n: int) -> int:
        return int(ts[np.argmin(np.abs(lengths - n))])

    out = {}
    x = chains.batch([pick(100)] * 8, max_length=100)
    for steps in (10, 20):
        times = []
        for r in range(6):
            t0 = time.perf_counter()
            design_batch(model, x, num_steps=steps, generator=torch.Generator().manual_seed(r))
            if r:
                times.append(time.perf_counter() - t0)
        out[f"design_{steps}"] = float(np.median(times))
    if hasattr(D, "conditional_log_probs"):  # absent before score --conditional-probs
        for n in (100, 300):
            x1 = chains.batch([pick(n)], max_length=n)
            with torch.no_grad():
                enc = model.encode(x1)
            times = []
            for r in range(4):
                t0 = time.perf_counter()
                D.conditional_log_probs(model, enc, x1.S[0], x1.mask[0] & (x1.S[0] != X_INDEX))
                if r:
                    times.append(time.perf_counter() - t0)
            out[f"conditional_{n}"] = float(np.median(times))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
