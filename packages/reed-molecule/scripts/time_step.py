"""Seconds per training step of a denoiser preset (forward, backward, AdamW) on one QM9 batch.

    uv run --locked python packages/reed-molecule/scripts/time_step.py --preset paper --batch-size 32 --threads 2

Random QM9 training molecules from the pack (``reed-molecule pack`` first), the process loss at random t; the
first two steps are warm-up, the median of the rest is printed. ``--precision bf16`` runs the forward pass and
the loss under bf16 autocast, as ``train --precision bf16`` does; ``--json`` appends the result as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from reed_core.cli import PRECISION_NAMES
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
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=PRECISION_NAMES, default="fp32")
    p.add_argument("--pack", default=str(default_pack_path()))
    p.add_argument("--json", default=None, help="append the result to this JSON-lines file")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.threads:
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
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = proc.loss(model(c.x_t, t).prediction, c).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    params = sum(q.numel() for q in model.parameters()) / 1e6
    median = float(np.median(times[2:]))
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name(args.device) if cuda else f"{torch.get_num_threads()} threads on cpu"
    print(f"{args.preset} ({params:.1f} M params), batch {args.batch_size}, {args.precision}, {where}: "
          f"{median:.3f} s/step (median of steps 3-{args.steps}; all: {[round(x, 3) for x in times]})")
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps({"preset": args.preset, "params_m": round(params, 2), "batch_size": args.batch_size,
                                 "precision": args.precision, "device": where, "threads": args.threads,
                                 "s_per_step": median, "steps": args.steps}) + "\n")


if __name__ == "__main__":
    main()
