"""Train the shipped 3-D teacher: ``uv run packages/reed-molecule/scripts/train_encoder3d.py``.

Coordinate denoising (sigma 0.2 Å) + regression of 9 standardised DFT properties on the EDM training split of
QM9, trained with reed-core's Trainer; writes ``src/reed_molecule/weights/encoder3d.safetensors`` and a JSON record of the run beside it.
"""

import argparse
import logging
from pathlib import Path

import torch

from reed_molecule.data import QM9Dataset
from reed_molecule.teachers import pretrain_encoder3d, save_encoder3d

OUT = Path(__file__).resolve().parents[1] / "src" / "reed_molecule" / "weights" / "encoder3d.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="molecules per step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu / cuda")
    p.add_argument("--out", type=Path, default=OUT, help="weights file")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds = QM9Dataset("train")
    enc, info = pretrain_encoder3d(ds, args.steps, args.batch_size, args.lr, args.seed, args.device)
    save_encoder3d(enc, info, args.out)
    print(f"wrote {args.out}: loss {info['first_loss']:.3f} -> {info['final_loss']:.3f} in {info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
