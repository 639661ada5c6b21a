"""Image files: a PNG grid of samples, an ``.npz`` of samples, and reading images back for ``eval``."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from reed_core.io import atomic_write

__all__ = ["image_grid", "read_images", "save_grid", "save_npz", "to_uint8"]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) in [-1, 1] -> (N,H,W,C) uint8."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (N,C,H,W) in [-1, 1] into one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 array."""
    imgs = to_uint8(x)
    n, h, w, c = imgs.shape
    cols = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(imgs):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = im
    return grid


def save_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    from PIL import Image

    grid = image_grid(x, nrow)
    buf = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buf, format="PNG")
    return atomic_write(path, buf.getvalue())


def save_npz(x: torch.Tensor, labels: torch.Tensor | None, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    arrays = {"images": to_uint8(x)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy().astype(np.int64)
    np.savez_compressed(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def read_images(path: str | os.PathLike, image_size: int, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N,C,H,W) in [-1, 1] (and labels, when an ``.npz`` has them) from an ``.npz`` (``images`` uint8
    (N,H,W[,C])) or a folder of image files (resized to ``image_size``)."""
    from PIL import Image, UnidentifiedImageError

    from .data import _IMAGE_SUFFIXES, to_tensor

    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
            images = z["images"]
        except KeyError:
            raise ValueError(f"{path}: an image .npz needs an 'images' array") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable .npz ({e})") from None
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"{path}: 'images' must be uint8 (N,H,W) or (N,H,W,C), got {images.dtype} {images.shape}")
        labels = torch.from_numpy(z["labels"].astype(np.int64)) if "labels" in z else None
        return to_tensor(images[..., None] if images.ndim == 3 else images), labels
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no image files")
        out = []
        for f in files:
            try:
                im = Image.open(f).convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.BICUBIC)
                out.append(np.asarray(im).reshape(image_size, image_size, channels))
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"{f}: not a readable image ({e})") from None
        return to_tensor(np.stack(out), image_size), None
    raise FileNotFoundError(f"{path}: no such .npz or image folder")
