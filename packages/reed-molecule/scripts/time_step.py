"""Seconds per training step of a denoiser preset (forward, backward, AdamW) on one QM9 batch.

    uv run --locked python packages/reed-molecule/scripts/time_step.py --preset paper --batch-size 32 --threads 2

Random QM9 training molecules from the pack (``reed-molecule pack`` first), the process loss at random t; the
first two steps are warm-up, the median of the rest is printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reed_molecule.config import MODEL_PRESETS
from reed_molecule.data import QM9Dataset
from reed_molecule.model import EQGATDenoiser
from reed_molecule.pack import default_pack_path
from reed_molecule.process import MolecularDiffusion


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper", choices=sorted(MODEL_PRESETS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--pack", default=str(default_pack_path()))
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ds = QM9Dataset("train", pack=args.pack)
    batch = ds.collate(np.random.default_rng(0).choice(len(ds), args.batch_size, replace=False)).to(args.device)
    proc = MolecularDiffusion.from_marginals(ds.marginals())
    model = EQGATDenoiser(MODEL_PRESETS[args.preset]).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    g = torch.Generator(device=args.device).manual_seed(0)
    times = []
    for _ in range(args.steps):
        t = torch.rand(args.batch_size, generator=g, device=args.device)
        start = time.perf_counter()
        c = proc.corrupt(batch, t, generator=g)
        loss = proc.loss(model(c.x_t, t).prediction, c).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    params = sum(q.numel() for q in model.parameters()) / 1e6
    print(f"{args.preset} ({params:.1f} M params), batch {args.batch_size}, {args.threads} threads on {args.device}: "
          f"{np.median(times[2:]):.2f} s/step (median of steps 3-{args.steps}; all: {[round(x, 2) for x in times]})")


if __name__ == "__main__":
    main()
