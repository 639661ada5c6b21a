"""pip install reed-protein (built wheels of reed-core + reed-protein) into a clean venv, then design offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import real_chain, write_pdb  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_wheel_installs_and_designs_offline(tmp_path):
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    for pkg in ("reed-core", "reed-protein"):
        subprocess.run(["uv", "build", "--package", pkg, "--wheel", "--out-dir", str(tmp_path / "dist")], cwd=ROOT,
                       check=True, capture_output=True, env=env, timeout=300)
    wheels = sorted(str(p) for p in (tmp_path / "dist").glob("*.whl"))
    assert len(wheels) == 2
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", str(venv), "--python", sys.executable], check=True, capture_output=True, env=env)
    py = venv / "bin" / "python"
    proc = subprocess.run(["uv", "pip", "install", "--python", str(py), *wheels], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seq, X, _ = real_chain()
    write_pdb(tmp_path / "in.pdb", [("A", seq, X)])
    run_env = {**env, "HF_HUB_OFFLINE": "1", "REED_PROTEIN_DATA": str(tmp_path / "nowhere.npz")}
    out = tmp_path / "out.fasta"
    cli = venv / "bin" / "reed-protein"
    r = subprocess.run([str(cli), "design", str(tmp_path / "in.pdb"), "--out", str(out), "--num-seqs", "2"],
                       capture_output=True, text=True, env=run_env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and lines[2].startswith(">T=0.1, sample=1")
    assert len(lines[3]) == len(seq)
