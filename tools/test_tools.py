"""tools/average_checkpoints.py: the mean of EMA weights, the first config, clear errors, nothing half-written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from average_checkpoints import main  # noqa: E402


def _checkpoint(path: Path, w: torch.Tensor, count: int = 3, best: bool = False) -> Path:
    path.mkdir()
    save_file({"w": w, "n": torch.tensor([count])}, str(path / "ema.safetensors"))
    (path / "config.json").write_text(json.dumps({"model": {"k": 1}, **({"best": {"step": 2}} if best else {})}))
    return path


def test_average_is_the_mean_and_keeps_the_first_config(tmp_path, capsys):
    a = _checkpoint(tmp_path / "a", torch.tensor([1.0, 2.0], dtype=torch.float16), best=True)
    b = _checkpoint(tmp_path / "b", torch.tensor([2.0, 5.0], dtype=torch.float16))
    assert main([str(a), str(b), "--out", str(tmp_path / "soup")]) == 0
    state = load_file(str(tmp_path / "soup" / "ema.safetensors"))
    assert state["w"].dtype == torch.float16 and state["w"].tolist() == [1.5, 3.5] and state["n"].tolist() == [3]
    config = json.loads((tmp_path / "soup" / "config.json").read_text())
    assert config == {"model": {"k": 1}, "averaged_from": [str(a), str(b)]}
    assert main([str(a), str(b), "--out", str(tmp_path / "soup")]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_mismatched_checkpoints_are_refused_and_nothing_is_written(tmp_path, capsys):
    a = _checkpoint(tmp_path / "a", torch.zeros(2))
    for name, w, count, message in (("shape", torch.zeros(3), 3, "w is torch.float32 (3,)"),
                                    ("count", torch.zeros(2), 4, "non-float tensor n differs")):
        other = _checkpoint(tmp_path / name, w, count)
        assert main([str(a), str(other), "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main([str(a), str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert main([str(a), "--out", str(tmp_path / "out")]) == 2
