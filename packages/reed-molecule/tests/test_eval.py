"""``reed-molecule eval`` as a tool for anyone's molecules: any element and size, SDF / XYZ / EDM's npz, bad
records skipped by number, implausible geometry never valid, no torch import."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reed_molecule.cli import main
from reed_molecule.io import read_records, write_molecules

DATA = Path(__file__).parent / "data"

ETHANOL = [("C", -0.0007, 0.5129, 0.0), ("C", -1.2450, -0.3544, 0.0), ("O", 1.1686, -0.3021, 0.0),
           ("H", 0.0335, 1.1591, 0.8815), ("H", 0.0335, 1.1591, -0.8815), ("H", -2.1423, 0.2699, 0.0),
           ("H", -1.2632, -0.9996, 0.8827), ("H", -1.2632, -0.9996, -0.8827), ("H", 1.9383, 0.2775, 0.0)]


def _xyz(atoms, scale=1.0, comment="") -> str:
    return f"{len(atoms)}\n{comment}\n" + "".join(f"{e} {x * scale} {y * scale} {z * scale}\n" for e, x, y, z in atoms)


def _sdf(path: Path, smiles: str = "OCCCCCCSCCCCCCCl") -> Path:
    """An MMFF-relaxed conformer of ``smiles`` (default: 40 atoms with S and Cl, no ring)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    AllChem.MMFFOptimizeMolecule(mol)
    path.write_text(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")  # aromatic bonds, as many tools write them
    return path


def test_gschnet_golden_through_the_cli(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", str(DATA / "gschnet_samples_edm.npz"), "--no-novelty", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 10_000 and r["n_implausible"] == 0 and r["n_stability"] == 10_000
    for key, edm in (("atom_stable", 95.7), ("mol_stable", 68.1), ("validity", 85.5), ("valid_unique", 80.3)):
        assert abs(r[key] - edm) <= 0.05 + 1e-9, (key, r[key], edm)  # EDM's Table 1, one decimal


def test_eval_imports_no_torch(tmp_path):
    f = tmp_path / "e.xyz"
    f.write_text(_xyz(ETHANOL))
    code = (f"import sys; from reed_molecule.cli import main; assert main(['eval', {str(f)!r}, '--no-novelty']) == 0; "
            "assert 'torch' not in sys.modules, 'eval imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_aromatic_sdf_bonds_are_kekulised(tmp_path, capsys):
    sdf = _sdf(tmp_path / "cpz.sdf", "CN(C)CCCN1c2ccccc2Sc2ccc(Cl)cc21")  # chlorpromazine
    (rec,), bad = read_records(sdf)
    assert not bad and len(rec.types) == 40 and set(np.unique(rec.bonds)) == {0, 1, 2}
    out = tmp_path / "m.json"
    assert main(["eval", str(sdf), "--no-novelty", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["connected_validity"] == 100.0


def test_any_element_and_size_stability_is_na(tmp_path, capsys):
    sdf = _sdf(tmp_path / "chain.sdf")
    (rec,), bad = read_records(sdf)
    assert not bad and len(rec.types) == 40
    csv = tmp_path / "m.csv"
    assert main(["eval", str(sdf), "--no-novelty", "--per-molecule", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "molecule stability %" in out and "n/a" in out
    row = csv.read_text().splitlines()[1].split(",")
    assert row[0] == "1" and row[1] == "40" and row[2] == "1" and "Cl" in row[3] and "S" in row[3]
    assert row[4] == "n/a" and row[6] == "ok" and row[9] == "1"  # valid, connected; EDM stability undefined
    assert row[7] == row[8] == "n/a"  # no unstable atoms or repair either


def test_mixed_file_counts_stability_over_the_defined_molecules(tmp_path, capsys):
    from rdkit import Chem

    sdf = _sdf(tmp_path / "chain.sdf")
    ethanol = Chem.MolFromXYZBlock(_xyz(ETHANOL))
    from rdkit.Chem import rdDetermineBonds

    rdDetermineBonds.DetermineBonds(ethanol, charge=0)
    mixed = tmp_path / "mixed.sdf"
    mixed.write_text(Chem.MolToMolBlock(ethanol) + "$$$$\n" + sdf.read_text())
    out = tmp_path / "m.json"
    assert main(["eval", str(mixed), "--no-novelty", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 2 and r["n_stability"] == 1 and r["mol_stable"] == 100.0 and r["validity"] == 100.0
    assert "molecule stability % (of 1)" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["blown up", "collapsed", "long bond"])
def test_garbage_geometry_is_never_valid(tmp_path, case):
    from rdkit import Chem

    f = tmp_path / ("m.xyz" if case == "blown up" else "m.sdf")
    if case == "blown up":
        f.write_text(_xyz(ETHANOL, scale=1e20))
    else:
        mol = Chem.AddHs(Chem.MolFromSmiles("C"))
        conf = Chem.Conformer(5)
        if case == "long bond":  # methane with one C-H bond 5 Å long
            for k, p in enumerate([(0, 0, 0), (1.09, 0, 0), (-0.36, 1.03, 0), (-0.36, -0.51, 0.89), (-1.8, -2.6, -4.4)]):
                conf.SetAtomPosition(k, p)
        mol.AddConformer(conf)
        f.write_text(Chem.MolToMolBlock(mol) + "$$$$\n")
    out = tmp_path / "m.json"
    assert main(["eval", str(f), "--no-novelty", "--json", str(out), "--per-molecule", str(tmp_path / "m.csv")]) == 0
    r = json.loads(out.read_text())
    if case == "long bond":  # EDM's validity takes distance bonds only (the stray H leaves a CH3 fragment)
        assert r["validity"] == 100.0 and r["n_long_bonds"] == 1 and r["n_implausible"] == 0
    else:
        assert r["validity"] == 0.0 and r["n_implausible"] == 1
    if r["connected_validity"] is not None:
        assert r["connected_validity"] == 0.0
    reason = {"blown up": "no two atoms within bonding distance", "collapsed": "atoms on top of each other",
              "long bond": "over-long bond"}[case]
    assert (tmp_path / "m.csv").read_text().splitlines()[1].split(",")[6] == reason


def test_bad_records_are_skipped_by_number_unless_strict(tmp_path, capsys):
    f = tmp_path / "three.xyz"
    f.write_text(_xyz(ETHANOL) + "2\n\nC 0 0 0\nO 1.2 zero 0\n" + _xyz(ETHANOL))
    out = tmp_path / "m.json"
    assert main(["eval", str(f), "--no-novelty", "--json", str(out)]) == 0
    cap = capsys.readouterr()
    assert "record 2: line 15" in cap.err and "1 of 3 records could not be read" in cap.out
    r = json.loads(out.read_text())
    assert r["n"] == 2 and r["bad_records"] == [{"record": 2, "reason": r["bad_records"][0]["reason"]}]
    out.unlink()
    assert main(["eval", str(f), "--no-novelty", "--strict", "--json", str(out)]) == 1
    assert not out.exists() and "--strict" in capsys.readouterr().err


def test_xyz_resynchronises_after_a_garbled_count_line(tmp_path):
    f = tmp_path / "g.xyz"
    f.write_text("garbage here\nmore garbage\n" + _xyz(ETHANOL))
    good, bad = read_records(f)
    assert [r.number for r in good] == [2] and bad[0][0] == 1 and "atom count" in bad[0][1]


@pytest.mark.parametrize("layout", ["reed", "edm-sampler"])
def test_npz_layouts(tmp_path, layout):
    pos = np.array([[[float(x), y, z] for _, x, y, z in ETHANOL]], np.float32)
    types = np.array([[{"C": 1, "O": 3, "H": 0}[e] for e, *_ in ETHANOL]])
    f = tmp_path / "m.npz"
    if layout == "reed":
        write_molecules({"pos": pos, "atoms": types, "mask": np.ones_like(types, bool)}, f)
    else:  # EDM's sampler tensors, one padding atom
        one_hot = np.zeros((1, 10, 5), np.float32)
        one_hot[0, np.arange(9), types[0]] = 1
        np.savez(f, x=np.concatenate([pos, np.zeros((1, 1, 3), np.float32)], 1), one_hot=one_hot,
                 node_mask=(np.arange(10) < 9)[None, :, None].astype(np.float32))
    (rec,), bad = read_records(f)
    assert not bad and rec.types.tolist() == types[0].tolist()
    np.testing.assert_allclose(rec.pos, pos[0], atol=1e-6)


def test_novelty_build_is_announced(tmp_path, monkeypatch, capsys):
    from reed_molecule import qm9

    monkeypatch.setenv("REED_MOLECULE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(qm9, "training_smiles", lambda cache=None, progress=True: set())
    f = tmp_path / "e.xyz"
    f.write_text(_xyz(ETHANOL))
    assert main(["eval", str(f)]) == 0
    assert "--no-novelty skips" in capsys.readouterr().err


def test_per_molecule_rows_say_which_atoms_fail_and_the_smallest_repair(tmp_path, capsys):
    """Ethanol (stable), ethanol without its hydroxyl H (a radical: O with valence 1, never stable whatever the
    geometry) and ethene with its C=C stretched to 1.40 Å (both carbons read valence 3; 1 pm from EDM's threshold)."""
    ethene = [("C", -0.70, 0.0, 0.0), ("C", 0.70, 0.0, 0.0), ("H", -1.25, 0.93, 0.0), ("H", -1.25, -0.93, 0.0),
              ("H", 1.25, 0.93, 0.0), ("H", 1.25, -0.93, 0.0)]
    f = tmp_path / "three.xyz"
    f.write_text(_xyz(ETHANOL) + _xyz(ETHANOL[:-1]) + _xyz(ethene))
    csv = tmp_path / "rows.csv"
    assert main(["eval", str(f), "--no-novelty", "--per-molecule", str(csv)]) == 0
    header, *rows = [r.split(",") for r in csv.read_text().splitlines()]
    cols = [[row[header.index(c)] for row in rows] for c in ("mol_stable", "unstable_atoms", "repair_shift_A")]
    assert cols == [["1", "0", "0"], ["", "O3:1", "C1:3 C2:3"], ["0.000", "inf", "0.010"]]
    js = tmp_path / "m.json"
    assert main(["eval", str(f), "--no-novelty", "--diagnose", "--json", str(js)]) == 0
    assert "why unstable: 2 of 3 molecules" in capsys.readouterr().out
    d = json.loads(js.read_text())["diagnosis"]
    assert d["repair"][0]["molecules"] == 1 and d["beyond"] == {"molecules": 1, "share_of_unstable": 50.0,
                                                                 "odd_valence_sum": 1}
    assert d["odd_valence_sum"] == pytest.approx(100 / 3) and d["atom_kinds"][0]["kind"] == "C with 3 (needs 4)"
    chain = _sdf(tmp_path / "chain.sdf")  # S and Cl: stability undefined, so nothing to diagnose
    assert main(["eval", str(chain), "--no-novelty", "--diagnose"]) == 0
    assert "diagnosis: n/a" in capsys.readouterr().out
