"""The benchmarks' arithmetic: interpolated speed-ups, seed means and merging, the teacher probe, method names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import mean_curve, merge_results, report_speedups, speedup, steps_to_reach, value_at  # noqa: E402


def test_steps_to_reach_interpolates_between_bracketing_points():
    curve = [(100, 10.0), (200, 20.0), (300, 40.0)]
    assert steps_to_reach(curve, 30.0) == 250.0
    assert steps_to_reach(curve, 5.0) == 100.0  # already reached at the first point
    assert steps_to_reach(curve, 50.0) is None
    assert steps_to_reach([(100, 3.0), (200, 1.0)], 2.0, lower_is_better=True) == 150.0
    assert value_at(curve, 150) == 15.0 and value_at(curve, 400) is None


def test_speedup_at_budget_fractions_and_undefined_reference():
    ref = [(100, 10.0), (200, 20.0), (300, 30.0), (400, 40.0)]
    fast = [(100, 20.0), (200, 40.0), (300, 50.0), (400, 55.0)]
    assert speedup(ref, fast)["speedup"] == 2.0  # 40 reached at step 200 instead of 400
    half = speedup(ref, fast, at=0.5)  # vanilla's value at step 200 (20) reached by step 100
    assert half["target"] == 20.0 and half["speedup"] == 2.0
    zero = speedup([(100, 0.0), (200, 0.0)], fast)
    assert zero["speedup"] is None and "note" in zero


def test_mean_curve_and_per_seed_speedups(capsys):
    seed0 = [{"step": 100, "x": 10.0, "novelty": None}, {"step": 200, "x": 20.0, "novelty": 90.0}]
    seed1 = [{"step": 100, "x": 14.0, "novelty": 80.0}, {"step": 200, "x": 22.0, "novelty": 100.0}]
    mean = mean_curve([seed0, seed1])
    assert mean[0]["x"] == 12.0 and mean[0]["spread"]["x"] == 4.0
    assert "novelty" not in mean[0] and mean[1]["novelty"] == 95.0  # a metric one seed lacks is left out
    with pytest.raises(ValueError, match="different steps"):
        mean_curve([seed0, [{"step": 150, "x": 1.0}, {"step": 200, "x": 2.0}]])
    fast = [{"step": 100, "x": 30.0}, {"step": 200, "x": 40.0}]
    results = {"methods": {"vanilla": {"curve": mean, "seed_curves": {"0": seed0, "1": seed1}},
                           "reed": {"curve": fast, "seed_curves": {"0": fast, "1": fast}}}}
    report_speedups(results, ["x"])
    s = results["speedup"]["reed"]["x"]
    assert s["speedup"] == 2.0 and s["per_seed"] == {"0": 2.0, "1": 2.0}
    assert "reed vs vanilla on x" in capsys.readouterr().out


def test_merge_needs_the_same_settings(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"config": {"steps": 10, "device": "cuda"}, "methods": {"repa": {"curve": []}}}))
    results = {"config": {"steps": 10, "device": "cpu"}, "methods": {"vanilla": {"curve": []}}}
    merge_results(results, [other], order=("vanilla", "repa", "reed"))
    assert list(results["methods"]) == ["vanilla", "repa"]
    with pytest.raises(SystemExit, match="different settings"):
        merge_results({"config": {"steps": 20}, "methods": {}}, [other], order=("repa",))
    # a setting the earlier JSON predates takes its legacy value: equal merges, different refuses
    merge_results({"config": {"steps": 10, "crop": "fixed"}, "methods": {}}, [other], order=("repa",),
                  legacy={"crop": "fixed"})
    with pytest.raises(SystemExit, match="different settings"):
        merge_results({"config": {"steps": 10, "crop": "random"}, "methods": {}}, [other], order=("repa",),
                      legacy={"crop": "fixed"})


def test_ridge_probe_recovers_a_linear_map():
    from molecule_teachers import ridge_probe

    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 2))
    x = rng.normal(size=(600, 6))
    y = x @ w + 3.0
    pred, lam = ridge_probe(x[:400], y[:400], x[400:500], y[400:500], x[500:])
    assert np.abs(pred - y[500:]).max() < 0.05 and lam <= 1e-2


def test_molecule_method_names_pick_teachers():
    from molecule_qm9 import method_preset

    assert [s.name for s in method_preset("reed:graph2d").latents] == ["graph2d"]
    assert method_preset("repa:graph2d").repa_latents == ("graph2d",)
    assert len(method_preset("reed").latents) == 2
    for bad in ("vanilla:graph2d", "reed:esm", "diffusion"):
        with pytest.raises(SystemExit, match="--methods"):
            method_preset(bad)


def test_molecule_sampling_compares_settings_molecule_by_molecule(tmp_path):
    """The sampling study keeps per-molecule outcomes and pairs every setting of a checkpoint with its first one:
    the paired difference and its SE; an earlier file joins only if it sampled the same molecules."""
    from molecule_sampling import _numbers, earlier_rows, outcomes, paired_difference, paired_rows

    from reed_molecule.metrics import MoleculeResults

    res = MoleculeResults(num_atoms=np.array([3, 3, 2]), defined=np.array([True, True, False]),
                          atoms_stable=np.array([3, 2, 0]), geometry=np.zeros(3, np.int8),
                          smiles=np.array(["C", None, "O"], dtype=object), bond_atoms_stable=np.array([3, 3, 2]),
                          connected=np.array([True, False, True]))
    assert outcomes(res) == {"mol_stable": "100", "valid": "101", "bond_mol_stable": "110", "connected": "101"}
    a, b = "1100110011", "1110110011"  # one molecule turns stable, the rest agree
    d, se = paired_difference(a, b)
    assert d == pytest.approx(10.0) and se == pytest.approx(100 * np.std([1] + [0] * 9, ddof=1) / np.sqrt(10))
    assert se < 100 * np.sqrt(0.6 * 0.4 / 10 + 0.7 * 0.3 / 10)  # tighter than two independent rates'
    with pytest.raises(ValueError, match="same molecules"):
        paired_difference("1", "10")
    rows = [{"checkpoint": "c", "steps": 250, "spacing": 2.0, "per_molecule": {"mol_stable": a, "valid": a}},
            {"checkpoint": "d", "steps": 250, "spacing": 2.0, "per_molecule": {"mol_stable": b, "valid": b}},
            {"checkpoint": "c", "steps": 100, "spacing": 2.0},  # an old row without outcomes: left out
            {"checkpoint": "c", "steps": 100, "spacing": 1.0, "per_molecule": {"mol_stable": b, "valid": a}},
            {"checkpoint": "c", "steps": 100, "spacing": 2.0, "noise_scale": 0.8, "per_molecule": {"mol_stable": b}},
            {"checkpoint": "c", "steps": 250, "spacing": 2.0, "posterior": "exact", "per_molecule": {"mol_stable": b}}]
    # rows from before the noise scale existed sampled at 1, before the posterior option with the proportional form
    pair, colder, exact = paired_rows(rows)
    assert pair["reference"] == (250, 2.0, 1.0, "proportional") and pair["setting"] == (100, 1.0, 1.0, "proportional")
    assert pair["diffs"]["mol_stable"] == pytest.approx((d, se)) and pair["diffs"]["valid"] == (0.0, 0.0)
    assert colder["setting"] == (100, 2.0, 0.8, "proportional") and set(colder["diffs"]) == {"mol_stable"}
    assert exact["setting"] == (250, 2.0, 1.0, "exact") and exact["diffs"]["mol_stable"] == pytest.approx((d, se))
    for text, kind in (("0", int), ("2.5", int), ("nan", float), ("-1", float), ("x", float)):
        with pytest.raises(SystemExit):
            _numbers(text, kind, "--steps")
    assert _numbers("100,250", int, "--steps") == [100, 250] and _numbers("1,2.5", float, "--spacing") == [1.0, 2.5]
    from molecule_sampling import check_noise_scale

    assert _numbers("1,0.8,0", float, "--noise-scale", check_noise_scale) == [1.0, 0.8, 0.0]
    for text in ("-0.5", "inf"):
        with pytest.raises(SystemExit, match="--noise-scale"):
            _numbers(text, float, "--noise-scale", check_noise_scale)
    args = type("A", (), {"n": 10, "seed": 0, "batch_size": 250})()
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"n": 10, "seed": 1, "batch_size": 250, "rows": rows}))
    with pytest.raises(SystemExit, match="not the same"):
        earlier_rows(str(path), args)
    path.write_text(json.dumps({"n": 10, "seed": 0, "batch_size": 250, "rows": rows}))
    assert len(earlier_rows(str(path), args)) == 5
    with pytest.raises(SystemExit, match="cannot read"):
        earlier_rows(str(tmp_path / "missing.json"), args)


def test_molecule_benchmark_pins_its_sampler_grid(monkeypatch):
    """The benchmark samples on the uniform grid (and with the exact noise) its recorded results used, whatever
    `sample`'s defaults, records the grid, and refuses a grid that is not finite and positive before loading data."""
    import molecule_qm9

    seen = {}
    monkeypatch.setattr(molecule_qm9, "sample_molecules", lambda *a, **kw: seen.update(kw) or {})
    monkeypatch.setattr(molecule_qm9, "validation_loss", lambda *a, **kw: 0.0)
    monkeypatch.setattr(molecule_qm9, "score", lambda arr, smiles: {})

    class Trainer:
        model_config = {"atom_histogram": [0.0, 1.0]}
        objective = type("O", (), {"process": None})()

        def ema_model(self):
            return None

    molecule_qm9.evaluate(Trainer(), 2, 3, 0, set(), "cpu", [])
    assert seen["spacing"] == 1.0 and molecule_qm9.LEGACY == {"sample_spacing": 1.0}
    assert seen["noise_scale"] == 1.0  # the exact ancestral step its recorded results used
    molecule_qm9.evaluate(Trainer(), 2, 3, 0, set(), "cpu", [], spacing=2.0)
    assert seen["spacing"] == 2.0 and seen["num_steps"] == 3
    for bad in ("0", "nan", "-1"):
        with pytest.raises(SystemExit):
            molecule_qm9.main(["--sample-spacing", bad])


def test_molecule_samples_saved_without_rdkit_are_scored_later(tmp_path):
    """A --samples-dir run leaves the EDM metrics None and names its sample files; --score fills them in per seed
    and recomputes the mean curve."""
    from molecule_qm9 import METRICS, SAMPLE_ARRAYS, score_saved

    n = 29
    pos = np.zeros((2, n, 3), np.float32)  # methane, twice: C at the origin, four H at 1.09 Å (tetrahedral)
    pos[:, 1:5] = 1.09 / np.sqrt(3) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)
    atoms = np.zeros((2, n), np.int64)
    atoms[:, 0] = 1  # ELEMENTS = H, C, N, O, F
    mask = np.zeros((2, n), bool)
    mask[:, :5] = True
    bonds = np.zeros((2, n, n), np.int64)
    bonds[:, 0, 1:5] = bonds[:, 1:5, 0] = 1
    arrays = {"pos": pos, "atoms": atoms, "charges": np.zeros((2, n), np.int64), "bonds": bonds, "mask": mask}
    assert set(arrays) == set(SAMPLE_ARRAYS)
    np.savez_compressed(tmp_path / "reed_seed0_step10.npz", **arrays)
    np.savez_compressed(tmp_path / "reed_seed1_step10.npz", **arrays)
    row = {k: None for k in METRICS} | {"step": 10, "val_loss": 1.0}
    results = {"methods": {"reed": {"curve": [], "seed_curves": {
        "0": [row | {"samples": "reed_seed0_step10.npz"}], "1": [row | {"samples": "reed_seed1_step10.npz", "val_loss": 3.0}]}}}}
    score_saved(results, tmp_path, smiles={"[H]C([H])([H])[H]"})  # methane as RDKit writes it, H explicit
    for curve in results["methods"]["reed"]["seed_curves"].values():
        assert curve[0]["atom_stable"] == 100.0 and curve[0]["validity"] == 100.0 and curve[0]["novelty"] == 0.0
    mean = results["methods"]["reed"]["curve"][0]
    assert mean["atom_stable"] == 100.0 and mean["val_loss"] == 2.0 and mean["spread"]["val_loss"] == 2.0
    (tmp_path / "reed_seed1_step10.npz").unlink()
    with pytest.raises(SystemExit, match="missing"):
        score_saved(results, tmp_path, smiles=set())


def test_regularisation_settings_parse_and_subsets_are_fixed():
    from protein_regularisation import parse_setting, subset

    assert parse_setting("fixed") == {"crop": "fixed", "backbone_noise": 0.0, "lr_decay": "constant", "method": "vanilla"}
    assert parse_setting("random+noise0.2+cosine", "reed") == {"crop": "random", "backbone_noise": 0.2,
                                                                "lr_decay": "cosine", "method": "reed"}
    assert parse_setting("random+repa+align1.5") == {"crop": "random", "backbone_noise": 0.0, "lr_decay": "constant",
                                                     "method": "repa", "align_coefficient": 1.5}
    assert parse_setting("random+reed+hold")["align_decay"] == "constant"
    assert parse_setting("random+reed+distill0.5")["distill"] == 0.5
    assert parse_setting("random+cdistill1") == {**parse_setting("random+distill1"), "distill_from": "conditional"}
    with pytest.raises(SystemExit, match="noiseX"):
        parse_setting("random+jitter")
    ids = np.arange(100, 200)
    a = subset(ids, 10, seed=0)
    assert len(set(a)) == 10 and set(a) <= set(ids) and np.array_equal(a, subset(ids, 10, seed=0))
    assert np.array_equal(subset(ids, None, 0), ids) and np.array_equal(subset(ids, 500, 0), ids)


def test_time_profile_reference_is_the_token_posterior_and_an_oracle_beats_it():
    from types import SimpleNamespace

    import torch
    from molecule_time_profile import bayes_token_ce, profile, time_grid

    from reed_molecule.process import MolecularDiffusion
    from reed_molecule.testing import random_molecules

    prior = torch.tensor([0.5, 0.3, 0.15, 0.05])
    x0, x_t = torch.tensor([[0, 1, 2, 3, 3]]), torch.tensor([[0, 0, 2, 1, 3]])
    a = 0.4
    got = bayes_token_ce(x0, x_t, torch.tensor([[a]]), prior)
    for i in range(5):  # p(x0 | x_t) by Bayes' rule, written out
        joint = [(a * (k == int(x_t[0, i])) + (1 - a) * prior[int(x_t[0, i])]) * prior[k] for k in range(4)]
        assert got[0, i].item() == pytest.approx(-np.log(float(joint[int(x0[0, i])] / sum(joint))), rel=1e-5)
    at_noise = bayes_token_ce(x0, x_t, torch.tensor([[0.0]]), prior)  # t = 1: the marginal itself
    assert torch.allclose(at_noise, -prior[x0].log())

    x = random_molecules(batch=4, atoms=7, dtype=torch.float32)
    process = MolecularDiffusion(atom_prior=(0.4, 0.3, 0.1, 0.1, 0.1), charge_prior=(0.1, 0.8, 0.1),
                                 bond_prior=(0.7, 0.1, 0.1, 0.1))

    def oracle(x_t, t, _):  # knows x0: positions off by 0.05 Å on every axis, confident correct categories
        def logits(v, k):
            return 20.0 * torch.nn.functional.one_hot(v, k).float()
        return SimpleNamespace(prediction=SimpleNamespace(pos=x.pos + 0.05, atom_logits=logits(x.atoms, 5),
                                                          charge_logits=logits(x.charges, 3), bond_logits=logits(x.bonds, 4)))

    rows = profile(oracle, process, [x], time_grid(4), seed=0)
    assert [r["t"] for r in rows] == [0.125, 0.375, 0.625, 0.875]
    assert sum(r["loss_share"] for r in rows) == pytest.approx(1.0)
    for r in rows:
        assert r["pos_rmse"] == pytest.approx(0.05, rel=1e-4)
        assert r["pos_rmse"] < r["pos_rmse_ref"]
        assert r["loss_weight"] == pytest.approx(float(process.loss_weight(torch.tensor([r["t"]]))[0]))
        for name in ("atoms", "charges", "bonds"):
            assert r[f"{name}_ce"] < 1e-6 < r[f"{name}_ce_ref"]
    assert rows[-1]["atoms_ce_ref"] > rows[0]["atoms_ce_ref"]  # more noise, less to read off x_t


def test_design_cli_benchmark_writes_a_readable_chain_and_times_processes(tmp_path):
    from protein_design_cli import command, fasta_recoveries, run_timed, write_chain_pdb

    from reed_protein.structure import read_structure

    pdb = tmp_path / "chain.pdb"
    name = write_chain_pdb(pdb, 100)
    s = read_structure(pdb)  # the file both tools read parses, every residue with its backbone
    assert name and len(s.chains) == 1 and abs(len(s.chains[0]) - 100) <= 5 and s.chains[0].mask.all()
    wall, rss, code = run_timed([sys.executable, "-c", "import time; time.sleep(0.2)"])
    assert code == 0 and wall >= 0.2 and rss > 1
    assert run_timed([sys.executable, "-c", "raise SystemExit(3)"])[2] == 3
    (tmp_path / "d.fa").write_text(">x, score=1.0\nAAA\n>T=0.1, sample=1, score=0.9, seq_recovery=0.3800\nAAA\n"
                                   ">T=0.1, sample=2, score=0.9, seq_recovery=0.4200\nAAC\n")
    assert fasta_recoveries(tmp_path / "d.fa") == [0.38, 0.42]
    cmd, env = command("protein_mpnn_run", "mpnn", pdb, tmp_path, 1, 0)
    assert env["OMP_NUM_THREADS"] == "1" and cmd[cmd.index("--seed") + 1] == "1"  # their seed 0 means random
    assert "OMP_NUM_THREADS" not in command("protein_mpnn_run", "mpnn", pdb, tmp_path, 0, 0)[1]  # its default
    cmd, env = command("reed-protein", "rp", pdb, tmp_path, 2, 0)
    assert cmd[cmd.index("--threads") + 1] == "2" and cmd[cmd.index("--num-seqs") + 1] == "8"


def test_teacher_fit_statistics():
    import torch
    from protein_teacher_fit import fit_stats, summarise

    g = torch.Generator().manual_seed(0)
    lp = torch.randn(2, 5, 21, generator=g).log_softmax(-1)
    S = lp[..., :20].argmax(-1)
    S[1, 4] = 20  # a native X is never scored
    scored = torch.ones(2, 5, dtype=torch.bool)
    scored[0, 0] = False
    same = summarise(fit_stats(lp, lp, S, scored))
    assert same["residues"] == 8 and same["model_recovery"] == same["teacher_recovery"] == 100.0
    assert same["argmax_agreement"] == 100.0 and abs(same["kl"]) < 1e-6
    assert same["model_perplexity"] == pytest.approx(same["teacher_perplexity"])
    uniform = torch.full_like(lp, -np.log(21.0))  # the model knows nothing: perplexity 20 over the 20 amino acids
    other = summarise(fit_stats(uniform, lp, S, scored))
    assert other["model_perplexity"] == pytest.approx(20.0) and other["kl"] > 0
    assert other["teacher_recovery"] == 100.0 and other["argmax_agreement"] == other["model_recovery"]


def test_allocator_benchmark_reads_training_rates_and_refuses_unknown_commands(tmp_path):
    from allocator import command, main, train_steps_per_s

    from _common import run_process

    usage = run_process([sys.executable, "-c", "import time; sum(range(3_000_000)); time.sleep(0.1)"])
    assert usage.code == 0 and usage.wall_s >= 0.1 and usage.user_s > 0 and usage.sys_s >= 0 and usage.peak_rss_mb > 1
    assert usage.minor_faults > 0
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "steps_per_s": r})
                                                      for s, r in [(1, 0.1), (2, 0.2), (3, 0.5), (4, 0.7), (5, 0.6)]))
    assert train_steps_per_s(tmp_path) == 0.6  # median of steps 3 and later
    assert train_steps_per_s(tmp_path / "missing") is None
    cmd, product = command("eval", tmp_path, tmp_path, tmp_path / "x.pdb")
    assert cmd[1:4] == ["eval", "--splits", "ts50"] and product == tmp_path / "eval.json"
    with pytest.raises(ValueError, match="unknown command"):
        command("nope", tmp_path, tmp_path, tmp_path / "x.pdb")
    with pytest.raises(SystemExit):
        main(["--commands", "eval,nope"])


def test_molecule_failures_accounts_for_every_molecule(tmp_path, capsys):
    """Every molecule lands in exactly one place (stable, a repair bin, beyond, gave up), the stability equals EDM's,
    and a checkpoint is sampled once per seed."""
    from molecule_failures import main

    from reed_molecule.constants import Z_TO_SYMBOL_INDEX
    from reed_molecule.io import write_molecules
    from reed_molecule.metrics import edm_stability

    d = np.load(Path(__file__).resolve().parents[1] / "packages/reed-molecule/tests/data/gschnet_samples_edm.npz")
    z = d["atomic_numbers"][:300].astype(int)
    arrays = {"pos": d["positions"][:300], "atoms": np.where(z > 0, Z_TO_SYMBOL_INDEX[z], 0), "mask": z > 0}
    f = write_molecules(arrays, tmp_path / "g.npz")
    out = main(["--samples", str(f), "--checkpoint", "shipped", "-n", "3", "--steps", "2", "--seeds", "0,1",
                "--trajectory", "4", "--reference", "0", "--out", str(tmp_path / "r.json")])
    assert list(out["sources"]) == ["g.npz", "shipped, seed 0", "shipped, seed 1"]
    r = out["sources"]["g.npz"]
    _, mol, n = edm_stability(arrays["pos"], arrays["atoms"], arrays["mask"])
    assert r["molecules"] == n and r["mol_stable"] == pytest.approx(mol)
    placed = sum(b["molecules"] for b in r["repair"]) + r["beyond"]["molecules"] + r["search_gave_up"]
    assert placed == r["unstable"] == round(n * (1 - mol / 100))
    assert r["beyond"]["odd_valence_sum"] <= r["beyond"]["molecules"]
    assert sum(k["atoms"] for k in r["atom_kinds"]) == r["unstable_atoms"] > 0
    assert out["sources"]["shipped, seed 1"]["molecules"] == 3
    (tr,) = out["trajectories"]
    assert tr["posterior"] == "exact" and [r["step"] for r in tr["rows"]] == [0, 1] and tr["rows"][0]["t"] == 1.0
    assert tr["rows"][-1]["atoms_changed"] >= 0 and 0 <= tr["rows"][-1]["odd_state_after"] <= 100
    assert "odd valence sum" in capsys.readouterr().out


def test_unmask_order_paired_difference():
    from protein_unmask_order import _list, paired

    r = paired([40.0, 50.0, 30.0], [41.0, 50.0, 32.0])
    assert r["diff"] == pytest.approx(1.0) and r["better"] == 2 and r["worse"] == 0
    assert r["se"] == pytest.approx(np.std([1.0, 0.0, 2.0], ddof=1) / np.sqrt(3))
    assert paired([1.0], [2.0])["se"] is None
    assert _list("10,20", int, "--steps") == [10, 20]
    with pytest.raises(SystemExit, match="--steps"):
        _list("10,x", int, "--steps")
