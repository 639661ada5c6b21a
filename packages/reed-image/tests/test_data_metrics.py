"""Image sets from every supported source, their bad-input errors, and the metrics against closed forms."""

import gzip

import numpy as np
import pytest
import torch

from reed_image.data import ImageTrainingData, load_images, to_tensor
from reed_image.metrics import default_classifier, frechet_distance, precision_recall


def test_embedded_mnist5k_has_a_fixed_stratified_split():
    train, held = load_images()
    assert (len(train), len(held)) == (4500, 500)
    assert np.bincount(held.labels).tolist() == [50] * 10 and np.bincount(train.labels).tolist() == [450] * 10
    again = load_images()[1]
    assert np.array_equal(again.images, held.images)
    x = to_tensor(held.images[:4])
    assert x.shape == (4, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and torch.all(x[..., :2, :] == -1)


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_npz_and_folder_sources(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for split, n in (("train", 30), ("t10k", 10)):
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    train, held = load_images(root)
    assert (len(train), len(held), train.class_names[9], train.kind) == (30, 10, "ankle boot", "clothing item")

    np.savez(tmp_path / "set.npz", images=rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8), labels=np.arange(40) % 4)
    train, held = load_images(tmp_path / "set.npz")
    assert (len(train), len(held), train.images.shape[1:]) == (36, 4, (16, 16, 3))

    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "folder" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "folder" / c / f"{i}.png")
    train, held = load_images(tmp_path / "folder", image_size=16)
    assert train.class_names == ("cat", "dog") and train.images.shape[1:] == (16, 16, 1) and len(held) == 2


def test_bad_sources_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image set"):
        load_images(tmp_path / "missing")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        load_images(tmp_path / "nolabels.npz")
    (tmp_path / "idx").mkdir()
    with gzip.open(tmp_path / "idx" / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    _write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(ValueError, match="truncated IDX"):
        load_images(tmp_path / "idx")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_images(tmp_path / "bad")


def test_training_view_matches_the_feature_cache_contract():
    train, _ = load_images()
    data = ImageTrainingData(train.subset(np.arange(8)), tokens=64)
    items = np.array([3, 1])
    assert data.collate(items).shape == (2, 1, 32, 32) and data.condition(items).tolist() == train.labels[[3, 1]].tolist()
    start, mask = data.window(data.collate(items))
    assert start.tolist() == [0, 0] and mask.shape == (2, 64) and mask.all() and data.lengths.tolist() == [64] * 8
    # ids key the on-disk feature cache: two different sets of the same size must not share them
    other = ImageTrainingData(train.subset(np.arange(8, 16)), tokens=64)
    assert not set(data.ids.tolist()) & set(other.ids.tolist())
    assert np.array_equal(data.ids, ImageTrainingData(train.subset(np.arange(8)), tokens=64).ids)


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 4)) * np.array([1.0, 2.0, 0.5, 1.5])
    b = rng.normal(1.0, 1.0, (20000, 4)) * np.array([2.0, 1.0, 0.5, 1.0]) + np.array([0.0, 3.0, 0.0, -1.0])
    ma, mb, va, vb = a.mean(0), b.mean(0), a.var(0, ddof=1), b.var(0, ddof=1)
    # near-diagonal covariances: the closed form for diagonal Gaussians, up to the sampled off-diagonal terms
    expected = ((ma - mb) ** 2).sum() + (va + vb - 2 * np.sqrt(va * vb)).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=2e-3)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_extremes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=g)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    far = torch.randn(200, 8, generator=g) + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    half = torch.cat([real[:100], far[:100]])
    p, r = precision_recall(real, half)
    assert p == pytest.approx(0.5) and 0.3 < r < 0.9


def test_shipped_classifier_recognises_the_held_out_digits():
    _, held = load_images()
    with torch.no_grad():
        pred = default_classifier()(to_tensor(held.images)).argmax(1)
    assert (pred == torch.from_numpy(held.labels)).float().mean() > 0.95
