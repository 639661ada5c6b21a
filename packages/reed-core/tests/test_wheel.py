"""reed-core builds into a wheel that installs into a clean venv without any domain library and imports."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_core_wheel_installs_alone(tmp_path):
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(["uv", "build", "--package", "reed-core", "--wheel", "--out-dir", str(tmp_path / "dist")],
                   cwd=ROOT, check=True, capture_output=True, env=env, timeout=300)
    wheel = next((tmp_path / "dist").glob("reed_core-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith("METADATA"))
        requires = [ln.split(":", 1)[1].strip() for ln in zf.read(meta).decode().splitlines() if ln.startswith("Requires-Dist")]
    names = {r.split(">")[0].split("=")[0].split("<")[0].split(";")[0].strip().lower() for r in requires}
    assert names == {"torch", "numpy", "safetensors", "tqdm"}
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", str(venv), "--python", sys.executable], check=True, capture_output=True, env=env)
    py = venv / "bin" / "python"
    proc = subprocess.run(["uv", "pip", "install", "--python", str(py), str(wheel)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = (
        "import importlib.util as u, reed_core, reed_core.testing\n"
        "from reed_core import REEDObjective, TrainConfig, Curriculum, build_trainer\n"
        "assert all(u.find_spec(m) is None for m in ('timm', 'transformers', 'esm', 'biotite', 'rdkit', 'e3nn', 'torch_geometric'))\n"
        "print(reed_core.__version__, Curriculum(warmup=0.05).denoise(100)(100))\n"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0.1.0", "1.0"]
