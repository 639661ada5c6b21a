"""Real teachers (golden checks), the DINOv2 adapter's token grid, captions, the preset on the seam, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reed_core import Batch
from reed_core.testing import assert_loss_decreases
from reed_image.cli import main
from reed_image.data import load_images, to_tensor
from reed_image.presets import PRESET, ImageDomain, image_trainer
from reed_image.teachers import (
    CaptionTeacher,
    DINOv2Teacher,
    EfficientNetTeacher,
    caption_images,
    efficientnet_lite0,
)

HERE = Path(__file__).parent


def test_efficientnet_weights_are_real_imagenet_weights():
    """Golden check: scikit-image's cat photo is an Egyptian cat (ImageNet 285), the top 3 all cats (281-285)."""
    im = np.asarray(Image.open(HERE / "data" / "chelsea_224.png"), np.float32)
    x = torch.from_numpy(im).permute(2, 0, 1)[None] / 127.5 - 1.0
    with torch.no_grad():
        top = efficientnet_lite0()(x).softmax(-1).topk(3)
    assert top.indices[0, 0].item() == 285 and set(top.indices[0].tolist()) <= set(range(281, 286))


def test_efficientnet_token_and_pooled_features_match_sit_grids():
    x = to_tensor(load_images()[1].images[:2])
    tok = EfficientNetTeacher(grid=8)(Batch(x))
    pooled = EfficientNetTeacher(grid=8, granularity="pooled")(Batch(x))
    assert tok.features.shape == (2, 64, 112) and tok.granularity == "token"
    assert pooled.features.shape == (2, 1280) and torch.isfinite(pooled.features).all()


def test_dinov2_adapter_matches_the_token_grid():
    from transformers import Dinov2Config

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       patch_size=4, image_size=16)
    teacher = DINOv2Teacher(config=cfg, grid=8)  # 8x8 patches at 32 px: the position table is interpolated
    rep = teacher(Batch(torch.rand(3, 1, 28, 28) * 2 - 1))
    assert rep.features.shape == (3, 64, 32) and teacher.input_size == 32
    with pytest.raises(FileNotFoundError, match="no DINOv2 checkpoint"):
        DINOv2Teacher("/nonexistent/dinov2")


def test_captions_describe_measured_attributes():
    x = -torch.ones(2, 1, 32, 32)
    for i in range(20):  # a stroke leaning right (top to the right) and a thin upright one on the left
        x[0, 0, 6 + i, 12 + i // 2: 16 + i // 2] = 1.0
        x[1, 0, 6 + i, 6] = 1.0
    caps = caption_images(x, [7, 1], [str(d) for d in range(10)], "handwritten digit")
    assert "left-slanting" in caps[0] or "right-slanting" in caps[0]
    assert caps[1].startswith("a thin, upright, narrow handwritten digit 1") and "placed left" in caps[1]


def test_caption_teacher_embeds_with_real_minilm():
    teacher = CaptionTeacher([str(d) for d in range(10)], "handwritten digit")
    e = teacher.embed(["a bold handwritten digit 7", "a bold handwritten digit 7, centred", "a recipe for soup"])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.3


def test_tiny_preset_loss_falls_and_reed_trains_with_cached_real_teachers(tmp_path):
    train, _ = load_images()
    small = train.subset(np.arange(0, 4500, 45))  # 100 images, 10 per digit
    hist = image_trainer("vanilla", small, None, steps=60, batch_size=32, lr=2e-3, progress=False).fit()
    assert_loss_decreases([h["denoise"] for h in hist], min_drop=0.2)
    t = image_trainer("reed", small, tmp_path / "run", steps=3, batch_size=8, progress=False, cache_dir=tmp_path / "c")
    hist = t.fit()
    assert {"align/image", "align/caption"} <= set(hist[-1]) and hist[0]["weight/denoise"] == 0.0
    assert sorted(p.name for p in (tmp_path / "c").iterdir())[0].startswith("teacher_caption_image_")
    domain = ImageDomain(None, t.model.cfg)
    assert domain.capture(8 / 28) == ("block2", 96) and domain.capture(16 / 28) == ("block3", 96)
    assert [s.name for s in PRESET.for_method("repa")] == ["image"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "run"
    rng = np.random.default_rng(0)
    npz = out.parent / "set.npz"
    np.savez(npz, images=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), labels=np.arange(40) % 10)
    assert main(["train", "--method", "vanilla", "--data", str(npz), "--steps", "4", "--batch-size", "8",
                 "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_cli_samples_a_grid_and_an_npz_that_eval_scores(run_dir, tmp_path, capsys):
    grid, npz = tmp_path / "g.png", tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(run_dir), "--class", "3,7", "--num", "12", "--steps", "4",
                 "--grid", str(grid), "--npz", str(npz), "--nrow", "6", "--quiet"]) == 0
    assert Image.open(grid).size == (6 * 34 + 2, 2 * 34 + 2)
    z = np.load(npz)
    assert z["images"].shape == (12, 32, 32, 1) and sorted(set(z["labels"].tolist())) == [3, 7]
    # eval scores 28x28-padded digits at 32 px: feed it the held-out images themselves -> FID ~ 0, precision 1
    held = load_images()[1]
    ref = tmp_path / "ref.npz"
    np.savez(ref, images=held.images[..., 0], labels=held.labels)
    assert main(["eval", str(ref), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["fid_classifier"] < 1e-3 and m["precision"] == 1.0 and m["class_accuracy"] > 0.95


def test_cli_bad_input_is_one_error_line_and_no_output(run_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    for argv, msg in [
        (["sample", "--checkpoint", str(run_dir), "--class", "12", "--grid", str(out)], "out of range"),
        (["sample", "--checkpoint", str(run_dir), "--class", "cat", "--grid", str(out)], "unknown class"),
        (["sample", "--checkpoint", str(run_dir), "--cfg", "0.5", "--grid", str(out)], "--cfg must be >= 1"),
        (["sample", "--checkpoint", str(run_dir), "--guidance-interval", "0.8,0.2", "--grid", str(out)], "lo < hi"),
        (["sample", "--checkpoint", "packages/reed-protein/src/reed_protein/weights/reed_inverse_folding",
          "--grid", str(out)], "expected a reed-image model"),
        (["sample", "--checkpoint", str(run_dir), "--grid", str(tmp_path)], "is a directory"),
        (["eval", str(tmp_path / "none.npz")], "no such"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("reed-image: error:") and msg in err and err.count("\n") == 1, err
        assert not out.exists()
    bad = tmp_path / "wrong.npz"
    np.savez(bad, images=np.zeros((20, 16, 16), np.uint8))
    assert main(["eval", str(bad)]) == 2 and "reference set has" in capsys.readouterr().err


def test_hybrid_preset_trains_and_samples_on_its_own_latents(run_dir, tmp_path, capsys):
    out = tmp_path / "hybrid"
    assert main(["train", "--method", "reed", "--preset", "hybrid", "--data", str(run_dir.parent / "set.npz"),
                 "--steps", "2", "--batch-size", "8", "--out", str(out), "--device", "cpu",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    grid = tmp_path / "h.png"
    for mode in ("self", "none"):
        assert main(["sample", "--checkpoint", str(out), "--num", "4", "--steps", "3", "--latents", mode,
                     "--grid", str(grid), "--quiet"]) == 0 and grid.is_file()
    assert main(["sample", "--checkpoint", str(run_dir), "--latents", "self", "--grid", str(tmp_path / "x.png")]) == 2
    assert "variational-hybrid" in capsys.readouterr().err


def test_train_cli_accumulates_micro_batches(run_dir, tmp_path, capsys):
    """--grad-accum N splits each step's --batch-size into N micro-batches (recorded in the run's config); a count
    that is not positive or does not divide the batch is one error line and nothing trained."""
    out = tmp_path / "acc"
    base = ["train", "--method", "vanilla", "--data", str(run_dir.parent / "set.npz"), "--steps", "2", "--batch-size",
            "6", "--out", str(out), "--device", "cpu"]
    assert main([*base, "--grad-accum", "0"]) == 2
    assert "--grad-accum must be >= 1, got 0" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--grad-accum", "4"]) == 2
    assert "--batch-size 6 is not divisible by --grad-accum 4" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--weight-decay", "-0.5"]) == 2
    assert "--weight-decay must be a finite number >= 0" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--grad-accum", "3", "--weight-decay", "0.01"]) == 0
    config = json.loads((out / "checkpoints" / "step_00000002" / "config.json").read_text())
    assert config["model"]["run"]["grad_accum"] == 3 and config["train"]["grad_accum"] == 3
    assert config["model"]["run"]["weight_decay"] == config["train"]["weight_decay"] == 0.01
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # FID of 20 samples in 128 dimensions
def test_cli_eval_every_keeps_the_lowest_fid_weights(tmp_path, capsys):
    from reed_image.loading import load_model
    from reed_image.presets import validation

    out = tmp_path / "run"
    args = ["train", "--method", "vanilla", "--steps", "4", "--batch-size", "8", "--out", str(out), "--device", "cpu",
            "--eval-every", "2", "--eval-samples", "20", "--eval-steps", "2"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"fid_classifier", "precision", "recall", "class_accuracy"} <= set(rows[0])
    best = json.loads((out / "best" / "config.json").read_text())["best"]
    want = min(rows, key=lambda r: r["fid_classifier"])
    assert best == {"metric": "fid_classifier", "value": want["fid_classifier"], "step": want["step"]}
    # the kept weights re-score the logged value exactly (same noise, same labels)
    train, held = load_images()
    t = image_trainer("vanilla", train, None, steps=4, batch_size=8, progress=False, device="cpu")
    score = validation(t, 2, held, samples=20, steps=2).evaluate(load_model(out / "best").model)
    assert score["fid_classifier"] == want["fid_classifier"]
    # other data needs a classifier for the evaluations: one error line, nothing trained
    npz = tmp_path / "set.npz"
    np.savez(npz, images=np.zeros((20, 28, 28), np.uint8), labels=np.arange(20) % 10)
    assert main(["train", "--data", str(npz), "--eval-every", "2", "--out", str(tmp_path / "x")]) == 2
    assert "needs --classifier" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_train_cli_stops_cleanly_on_sigterm(run_dir, tmp_path):
    """A preemption notice (SIGTERM) mid-run: the step in flight finishes, a checkpoint is written, exit 143 with
    no traceback (resuming from it exactly: reed-core's test_train)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reed_image.cli", "train", "--method", "vanilla", "--data",
           str(run_dir.parent / "set.npz"), "--steps", "100000", "--batch-size", "8", "--out", str(out),
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr
    step = int(stdout.split("stopped by SIGTERM at step ")[1].split()[0])
    assert step >= 50 and (out / "checkpoints" / f"step_{step:08d}" / "model.safetensors").is_file()
    logged = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines()]
    assert logged[-1] <= step
