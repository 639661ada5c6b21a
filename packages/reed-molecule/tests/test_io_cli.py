import numpy as np
import pytest

from reed_molecule.cli import main
from reed_molecule.io import MoleculeFormatError, read_molecules, write_molecules
from reed_molecule.loading import default_checkpoint

ETHANOL_XYZ = """9
ethanol
C -0.0007 0.5129 0.0000
C -1.2450 -0.3544 0.0000
O 1.1686 -0.3021 0.0000
H 0.0335 1.1591 0.8815
H 0.0335 1.1591 -0.8815
H -2.1423 0.2699 0.0000
H -1.2632 -0.9996 0.8827
H -1.2632 -0.9996 -0.8827
H 1.9383 0.2775 0.0000
"""


def _arrays():
    # water and ethylene, with bonds and charges
    pos = np.zeros((2, 6, 3), np.float32)
    pos[0, :3] = [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]
    pos[1, :6] = [[0, 0, 0], [1.33, 0, 0], [-0.55, 0.94, 0], [-0.55, -0.94, 0], [1.88, 0.94, 0], [1.88, -0.94, 0]]
    atoms = np.array([[3, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6], bool)
    bonds = np.zeros((2, 6, 6), np.int64)
    for b, i, j, o in [(0, 0, 1, 1), (0, 0, 2, 1), (1, 0, 1, 2), (1, 0, 2, 1), (1, 0, 3, 1), (1, 1, 4, 1), (1, 1, 5, 1)]:
        bonds[b, i, j] = bonds[b, j, i] = o
    return {"pos": pos, "atoms": atoms, "mask": mask, "bonds": bonds, "charges": np.zeros((2, 6), np.int64)}


@pytest.mark.parametrize("suffix", [".sdf", ".xyz"])
def test_write_read_round_trip(tmp_path, suffix):
    arr = _arrays()
    path = write_molecules(arr, tmp_path / f"m{suffix}")
    back = read_molecules(path)
    assert back["mask"].sum(1).tolist() == [3, 6]
    np.testing.assert_allclose(back["pos"][back["mask"]], arr["pos"][arr["mask"]], atol=1e-4)
    assert (back["atoms"][back["mask"]] == arr["atoms"][arr["mask"]]).all()
    if suffix == ".sdf":
        assert (back["bonds"] == arr["bonds"]).all()


def test_eval_prints_table_for_xyz(tmp_path, capsys):
    f = tmp_path / "ethanol.xyz"
    f.write_text(ETHANOL_XYZ)
    assert main(["eval", str(f), "--no-novelty", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "molecule stability %" in out and "100.00" in out
    assert (tmp_path / "m.json").is_file()


BAD = {
    "empty.sdf": ("", "file is empty"),
    "trunc.xyz": ("5\ncomment\nC 0 0 0\nH 1 0 0\n", "truncated"),
    "elem.xyz": ("2\n\nC 0 0 0\nXx 1.7 0 0\n", "unknown element"),
    "nan.xyz": ("2\n\nC 0 0 0\nO nan 0 0\n", "non-finite"),
    "zero.xyz": ("0\n\n", "no atoms"),
    "notnpz.npz": ("PK not really a zip", "not a readable .npz"),
    "garbage.xyz": ("hello\nworld\n", "expected an atom count"),
    "bad.sdf": ("not a mol block\n\n\n  x  y\nM  END\n$$$$\n", "could not parse"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_one_clear_error(tmp_path, capsys, name):
    text, expected = BAD[name]
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(MoleculeFormatError, match=expected):
        read_molecules(f)
    assert main(["eval", str(f), "--no-novelty"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reed-molecule: error:") and name in err[0]


def test_bad_output_and_checkpoint_leave_no_file(tmp_path, capsys):
    assert main(["sample", "-n", "2", "--out", str(tmp_path / "x.pdb")]) == 2
    assert main(["sample", "-n", "2", "--out", str(tmp_path / "x.sdf"), "--checkpoint", str(tmp_path / "nope")]) == 2
    assert not list(tmp_path.iterdir())
    assert "error" in capsys.readouterr().err
    for flag, value in (("--steps", "0"), ("--spacing", "0"), ("--spacing", "nan"), ("--noise-scale", "-1"),
                        ("--noise-scale", "nan")):
        assert main(["sample", "-n", "2", "--out", str(tmp_path / "x.sdf"), flag, value]) == 2
        assert f"{flag} must be" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_train_dry_run_prints_config(capsys):
    import json

    assert main(["train", "--dry-run", "--preset", "paper"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model_config"]["layers"] == 12 and cfg["latents"] == {"graph2d": "layer5", "encoder3d": "layer8"}
    assert cfg["align_coefficient"] == 0.2 and cfg["curriculum"]["warmup"] == 0.15
    assert cfg["time_power"] == 1.0 and cfg["precision"] == "fp32"
    assert main(["train", "--dry-run", "--time-power", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["time_power"] == 2.0
    assert main(["train", "--dry-run", "--precision", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bf16"
    assert main(["train", "--dry-run", "--grad-accum", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["grad_accum"] == 4
    assert main(["train", "--dry-run", "--grad-accum", "0"]) == 2
    assert "--grad-accum must be >= 1, got 0" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--time-power", "0"]) == 2
    assert "--time-power must be a finite number > 0" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--weight-decay", "0.01"]) == 0
    assert json.loads(capsys.readouterr().out)["weight_decay"] == 0.01
    assert main(["train", "--dry-run", "--weight-decay", "nan"]) == 2
    assert "--weight-decay must be a finite number >= 0, got nan" in capsys.readouterr().err


def test_a_directory_as_output_is_one_error_line(tmp_path, capsys):
    (tmp_path / "d.sdf").mkdir()
    assert main(["sample", "-n", "1", "--steps", "2", "--out", str(tmp_path / "d.sdf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a directory" in err[0]


@pytest.mark.skipif(not (default_checkpoint() / "ema.safetensors").is_file(), reason="no shipped checkpoint")
def test_sample_sdf_eval_round_trip_with_shipped_checkpoint(tmp_path, capsys):
    out = tmp_path / "mols.sdf"
    assert main(["sample", "-n", "6", "--out", str(out), "--steps", "20", "--seed", "3"]) == 0
    arr = read_molecules(out)
    assert arr["pos"].shape[0] == 6 and np.isfinite(arr["pos"]).all()
    assert main(["eval", str(out), "--no-novelty", "--energy"]) == 0
    assert "atom stability %" in capsys.readouterr().out


def test_energy_json_is_valid_json_when_mmff_fails(tmp_path, capsys):
    import json

    sdf = tmp_path / "collapsed.sdf"  # methane with every atom at one point: MMFF gives no finite energy
    atoms = "\n".join(["    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0"]
                      + ["    0.0000    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0"] * 4)
    bonds = "\n".join(f"  1  {k}  1  0" for k in range(2, 6))
    sdf.write_text(f"m\n  RDKit          3D\n\n  5  4  0  0  0  0  0  0  0  0999 V2000\n{atoms}\n{bonds}\nM  END\n$$$$\n")
    out = tmp_path / "m.json"
    assert main(["eval", str(sdf), "--no-novelty", "--energy", "--json", str(out)]) == 0

    def no_nan(token):
        raise AssertionError(f"invalid JSON constant {token}")

    e = json.loads(out.read_text(), parse_constant=no_nan)["energy"]
    assert e["n_failed"] == 1 and e["n_scored"] == 0 and e["energy_mean"] is None
    assert "non-finite energy" in capsys.readouterr().out


def test_size_distribution_fixed_range_and_out_of_histogram():
    from reed_molecule.sampler import size_distribution

    hist = np.zeros(30)
    hist[[9, 12, 19]] = [1, 2, 7]
    assert size_distribution(hist, 12).argmax() == 12 and size_distribution(hist, 12).sum() == 1
    p = size_distribution(hist, (10, 20))
    np.testing.assert_allclose(p[[12, 19]], [2 / 9, 7 / 9])  # the histogram restricted to the range
    q = size_distribution(hist, (32, 35))  # beyond the training sizes: uniform
    np.testing.assert_allclose(q[32:], 0.25)
    with pytest.raises(ValueError):
        size_distribution(hist, (5, 3))


@pytest.mark.skipif(not (default_checkpoint() / "ema.safetensors").is_file(), reason="no shipped checkpoint")
def test_sample_num_atoms_to_npz(tmp_path, capsys):
    from reed_molecule.io import read_records

    out = tmp_path / "m.npz"
    assert main(["sample", "-n", "3", "--num-atoms", "31-32", "--steps", "2", "--out", str(out)]) == 0
    good, bad = read_records(out)
    assert not bad and all(len(r.types) in (31, 32) for r in good) and len(good) == 3
    assert main(["sample", "-n", "1", "--num-atoms", "x", "--out", str(tmp_path / "y.sdf")]) == 2
    assert "--num-atoms" in capsys.readouterr().err and not (tmp_path / "y.sdf").exists()
