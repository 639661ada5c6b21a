"""Sample quality on the features of an in-project classifier: FID_<extractor>, k-NN precision / recall, class
accuracy.

The Fréchet distance uses ``scipy.linalg.sqrtm``; precision / recall are Kynkäänniemi et al. (2019) with k = 3
(a sample is precise when it falls inside the k-NN ball of some real image, and vice versa for recall). The
feature extractor is ``ImageClassifier``, a small CNN trained on the data set in-project (weights ship for the
embedded MNIST 5k set), so the numbers are FID_classifier, never to be compared with Inception FID. A second
extractor, EfficientNet-Lite0's pooled ImageNet features (``FID_effnet``), needs ``reed-image[teachers]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ImageClassifier", "default_classifier", "frechet_distance", "precision_recall", "sample_metrics",
           "train_classifier"]


class ImageClassifier(nn.Module):
    """Four 3x3 conv stages (32-32 / 64-64 / 128, two 2x2 max-pools), global average pooling to 128 features, a
    linear head. ``features(x)`` are the 128-d pooled activations used for FID and precision / recall."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()

        def conv(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(*conv(in_channels, 32), *conv(32, 32), nn.MaxPool2d(2), *conv(32, 64),
                                  *conv(64, 64), nn.MaxPool2d(2), *conv(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(128, num_classes)
        self.in_channels, self.num_classes = in_channels, num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int = 8, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, progress: bool = False) -> ImageClassifier:
    """Train ``ImageClassifier`` on images (N,C,H,W) in [-1, 1] with random 2-pixel shifts (AdamW, cosine LR)."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ImageClassifier(x.shape[1], num_classes)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    bar = tqdm(total=steps, desc="classifier", disable=not progress)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return model.eval()


def default_classifier() -> ImageClassifier:
    """The classifier shipped for the embedded MNIST 5k set (``scripts/train_classifier.py`` made it)."""
    return load_classifier(str(resources.files("reed_image").joinpath("weights/classifier_mnist5k.safetensors")))


def load_classifier(path: str | os.PathLike) -> ImageClassifier:
    """An ``ImageClassifier`` saved by ``scripts/train_classifier.py`` (its shape in the safetensors metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no classifier weights")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    model = ImageClassifier(int(meta.get("in_channels", 1)), int(meta.get("num_classes", 10)))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@torch.no_grad()
def extract(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of feature sets (N, D), in float64."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        eps = 1e-6 * np.eye(len(s_a))
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets (N, D) with k-NN radii."""
    real, fake = real.double(), fake.double()

    def radii(x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # the 0 self-distance is the first

    def covered(points: torch.Tensor, centres: torch.Tensor, r: torch.Tensor) -> float:
        return float((torch.cdist(points, centres) <= r[None, :]).any(dim=1).double().mean())

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def sample_metrics(samples: torch.Tensor, labels: torch.Tensor | None, real: torch.Tensor,
                   classifier: ImageClassifier, *, k: int = 3, extra: dict[str, Callable] | None = None
                   ) -> dict[str, float]:
    """FID_classifier, precision, recall, class accuracy (when ``labels`` are given) of ``samples`` against ``real``
    images (both (N,C,H,W) in [-1, 1]); ``extra`` maps a name to another feature extractor (``FID_<name>``)."""
    samples = samples.clamp(-1, 1)
    f_real, f_fake = extract(classifier.features, real), extract(classifier.features, samples)
    p, r = precision_recall(f_real, f_fake, k)
    out = {"fid_classifier": frechet_distance(f_real.numpy(), f_fake.numpy()), "precision": p, "recall": r}
    if labels is not None:
        with torch.no_grad():
            pred = classifier.head(f_fake).argmax(1)  # the logits of the features already extracted
        out["class_accuracy"] = float((pred == labels.cpu()).float().mean())
    for name, fn in (extra or {}).items():
        out[f"fid_{name}"] = frechet_distance(extract(fn, real).numpy(), extract(fn, samples).numpy())
    return out
