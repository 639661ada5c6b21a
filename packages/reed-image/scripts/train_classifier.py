"""Train the in-project feature extractor of the image metrics on an image set and save it as safetensors.

    python scripts/train_classifier.py                       # embedded MNIST 5k -> reed_image/weights/classifier_mnist5k.safetensors
    python scripts/train_classifier.py --data /usr/share/datasets/fashion-mnist --out fashion.safetensors
"""

import argparse
import time
from pathlib import Path

import torch

from reed_core import save_weights
from reed_image.data import load_images, to_tensor
from reed_image.metrics import train_classifier

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default=None, help="image set (default: the embedded MNIST 5k)")
p.add_argument("--epochs", type=int, default=8)
p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "src/reed_image/weights/classifier_mnist5k.safetensors"))
args = p.parse_args()
torch.set_num_threads(max(1, torch.get_num_threads()))
train, held = load_images(args.data)
x, y = to_tensor(train.images), torch.from_numpy(train.labels)
t0 = time.time()
model = train_classifier(x, y, train.num_classes, epochs=args.epochs, progress=True)
with torch.no_grad():
    acc = (model(to_tensor(held.images)).argmax(1) == torch.from_numpy(held.labels)).float().mean().item()
print(f"trained in {time.time() - t0:.0f} s; eval accuracy {100 * acc:.2f} % on {len(held)} held-out images")
save_weights(args.out, model.state_dict(),
             metadata={"in_channels": str(x.shape[1]), "num_classes": str(train.num_classes), "data": train.source,
                    "eval_accuracy": f"{acc:.4f}"})
print(f"wrote {args.out}")
