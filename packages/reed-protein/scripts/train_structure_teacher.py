"""Train the shipped "structure" teacher: a small MPNN (hidden 64, 3 encoder layers, k 24) trained by
masked-residue prediction (the masked-diffusion ELBO) on the training chains, cluster-balanced.

``uv run packages/reed-protein/scripts/train_structure_teacher.py [--steps N] [--device cuda]``
writes ``src/reed_protein/weights/structure_encoder.safetensors`` and a JSON record beside it.
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from reed_core import Batch, REEDObjective, StepData, StepSampler, TrainConfig, Trainer, save_weights
from reed_protein.data import ChainSet
from reed_protein.evaluation import evaluate
from reed_protein.model import ProteinDenoiser
from reed_protein.process import MaskedDiffusion
from reed_protein.teachers import STRUCTURE_CONFIG

OUT = Path(__file__).resolve().parents[1] / "src" / "reed_protein" / "weights" / "structure_encoder.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    chains = ChainSet()
    ids = chains.split("train")
    model = ProteinDenoiser(STRUCTURE_CONFIG)
    sampler = StepSampler(len(ids), args.batch_size, seed=args.seed, weights=chains.cluster_weights(ids).tolist())
    data = StepData(sampler, lambda pos: Batch(x0=chains.batch(ids[pos], args.max_length, crop_seed=args.seed)))
    cfg = TrainConfig(max_steps=args.steps, lr=args.lr, seed=args.seed, ema_decay=0.999, lr_warmup_steps=200,
                      log_every=100)
    trainer = Trainer(model, REEDObjective(MaskedDiffusion()), data, cfg, None, device=args.device)
    hist = trainer.fit(resume=False)
    trainer.ema.copy_to(model)
    valid = evaluate(model, chains, chains.split("valid"), device=args.device)
    save_weights(args.out, model.state_dict())
    info = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "config": asdict(STRUCTURE_CONFIG), "first_loss": hist[0]["loss"],
            "final_loss": sum(h["loss"] for h in hist[-100:]) / min(100, len(hist)), "valid": valid}
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
