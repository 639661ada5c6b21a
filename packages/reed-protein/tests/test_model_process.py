import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import real_chain  # noqa: E402

from reed_core import Batch  # noqa: E402
from reed_core.testing import random_rotation  # noqa: E402
from reed_protein.constants import MASK_INDEX, X_INDEX  # noqa: E402
from reed_protein.data import ChainSet, pad_batch  # noqa: E402
from reed_protein.features import ATOM_PAIRS, featurize, knn_graph, rbf, virtual_cb  # noqa: E402
from reed_protein.model import PROTEIN_PRESETS, ProteinDenoiser, ProteinModelConfig  # noqa: E402
from reed_protein.process import MaskedDiffusion  # noqa: E402
from reed_protein.sampler import sample_sequences
from reed_protein.teachers import BackboneTeacher, PairGeometryTeacher  # noqa: E402


@pytest.fixture(scope="module")
def chains():
    return ChainSet()


def _batch(chains, n=3, max_length=60):
    return chains.batch(chains.split("ts50")[:n], max_length=max_length)


def test_featurizer_golden_values_on_a_real_chain(chains):
    seq, X, name = real_chain()
    x = pad_batch([{"X": X, "S": np.zeros(len(seq), int), "residue_idx": np.arange(len(seq)),
                    "chain_idx": np.ones(len(seq), int)}])
    Xd = x.X.double()
    cb = virtual_cb(Xd)[0]
    ca, n = Xd[0, :, 1], Xd[0, :, 0]
    m = x.mask[0]
    d_cacb = (cb - ca).norm(dim=-1)[m]
    # ProteinMPNN's virtual CB: ideal CA-CB 1.52 Å on average, varying with the real N-CA-C geometry
    assert abs(float(d_cacb.mean()) - 1.522) < 0.02 and float(d_cacb.min()) > 1.2 and float(d_cacb.max()) < 1.8
    a = torch.nn.functional.normalize(n - ca, dim=-1)
    b = torch.nn.functional.normalize(cb - ca, dim=-1)
    ang = torch.rad2deg(torch.acos((a * b).sum(-1)))[m]
    assert abs(float(ang.mean()) - 110.5) < 1.5  # N-CA-CB angle
    feats, rel, E_idx, emask = featurize(Xd, x.mask, x.residue_idx, x.chain_idx, k=16)
    assert feats.shape == (1, len(seq), 16, len(ATOM_PAIRS) * 16)
    # the first neighbour is the residue itself, its CA-CA RBF peaks at the 2 Å centre (distance ~0)
    assert (E_idx[0, m, 0] == torch.nonzero(m).squeeze(-1)).all()
    # CA-CA distances of neighbours equal a direct numpy computation
    ca_np = X[:, 1]
    i = int(torch.nonzero(m)[5])
    j = int(E_idx[0, i, 3])
    d_np = float(np.linalg.norm(ca_np[i] - ca_np[j]))
    expect = rbf(torch.tensor([d_np], dtype=torch.float64))[0]
    assert torch.allclose(feats[0, i, 3, :16], expect, atol=1e-5)
    assert rel[0, i, 0] == 32  # offset 0 -> class MAX_REL
    _, dist, _ = knn_graph(Xd, x.mask, 16)
    assert (dist[0, m][:, 1:] >= dist[0, m][:, :-1]).all()  # sorted by distance


def test_logits_and_hiddens_invariant_to_rigid_motions(chains):
    torch.manual_seed(0)
    model = ProteinDenoiser(ProteinModelConfig(hidden=32, encoder_layers=2, decoder_layers=2, k=12, dropout=0.0)).double().eval()
    x = _batch(chains)
    x = x.with_(X=x.X.double())
    rot = random_rotation(torch.Generator().manual_seed(1), reflect=False)
    moved = x.with_(X=(x.X @ rot.T + torch.tensor([10.0, -4.0, 7.0], dtype=torch.float64)) * x.mask[..., None, None])
    cap = ("enc2", "edge2", "dec1")
    a = model(x, capture=cap)
    b = model(moved, capture=cap)
    m = x.mask
    assert torch.allclose(a.prediction[m], b.prediction[m], atol=1e-8)
    for k in cap:
        assert torch.allclose(a.hiddens[k][m], b.hiddens[k][m], atol=1e-8), k
    # teacher targets are invariant too
    ta = BackboneTeacher()(Batch(x0=x.with_(X=x.X.float())))
    tb = BackboneTeacher()(Batch(x0=moved.with_(X=moved.X.float())))
    assert torch.allclose(ta.features, tb.features, atol=5e-3)  # float32 H-bond energies: ~1.5e-3 noise
    pa = PairGeometryTeacher(12)(Batch(x0=x.with_(X=x.X.float())))
    pb = PairGeometryTeacher(12)(Batch(x0=moved.with_(X=moved.X.float())))
    assert torch.allclose(pa.features, pb.features, atol=2e-3)
    assert pa.features.shape[:3] == a.hiddens["edge2"].shape[:3]


def test_process_oracles(chains):
    p = MaskedDiffusion()
    x = _batch(chains)
    c0 = p.corrupt(x, torch.zeros(3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(c0.x_t.S, x.S)
    c1 = p.corrupt(x, torch.ones(3), generator=torch.Generator().manual_seed(0))
    assert (c1.x_t.S[x.design_mask] == MASK_INDEX).all() and torch.equal(c1.x_t.S[~x.design_mask], x.S[~x.design_mask])
    oracle = torch.log(torch.nn.functional.one_hot(x.S, 21).double())
    for t in (0.3, 1.0):
        c = p.corrupt(x, torch.full((3,), t), generator=torch.Generator().manual_seed(2))
        assert torch.all(p.loss(oracle, c) == 0)
        assert torch.all(MaskedDiffusion("smoothed", label_smoothing=0.0).loss(oracle, c) == 0)
    wrong = torch.zeros_like(oracle)
    c = p.corrupt(x, torch.full((3,), 0.5), generator=torch.Generator().manual_seed(3))
    expect = np.log(21) * c.extras["masked"].float().sum(1) / c.extras["scored"].float().sum(1) / 0.5
    assert torch.allclose(p.loss(wrong, c).double(), expect.double(), atol=1e-4)


def test_sampler_with_oracle_returns_native_and_respects_fixed(chains):
    x = _batch(chains)
    x = x.with_(S=torch.where(x.S == X_INDEX, 0, x.S))
    oracle = 30.0 * torch.nn.functional.one_hot(x.S, 21).float()
    S, logp = sample_sequences(lambda S, t: oracle, x, num_steps=5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(S[x.design_mask], x.S[x.design_mask])
    fixed = x.with_(design_mask=x.design_mask & (torch.arange(x.S.shape[1]) >= 10))
    uniform = torch.zeros(*x.S.shape, 21)
    omit = torch.zeros(21, dtype=torch.bool)
    omit[:19] = True  # only Y (index 19) is left: X is always excluded
    S2, _ = sample_sequences(lambda S, t: uniform, fixed, num_steps=3, omit=omit, generator=torch.Generator().manual_seed(1))
    assert torch.equal(S2[:, :10], x.S[:, :10])
    designed = S2[fixed.design_mask]
    assert (designed == 19).all() and (designed != X_INDEX).all()
    with pytest.raises(ValueError):
        sample_sequences(lambda S, t: uniform, fixed, omit=torch.ones(21, dtype=torch.bool))


def test_confidence_order_unmasks_the_surest_residues_first(chains):
    """Step by step the confidence order unmasks round((t - s) / t * still masked) residues, those whose draw is
    most probable; fixed residues stay native, tied groups stay identical, and an unknown order is refused."""
    x = _batch(chains, n=2, max_length=40)
    x = x.with_(S=torch.where(x.S == X_INDEX, 0, x.S), design_mask=x.design_mask & (torch.arange(40) >= 4))
    L = x.S.shape[1]
    # residue j's logits peak on type j % 20 with a margin growing with j: later residues are surer
    logits = torch.zeros(2, L, 21)
    logits[:, torch.arange(L), torch.arange(L) % 20] = 1.0 + 0.2 * torch.arange(L, dtype=torch.float)
    seen = []

    def decode(S, t):
        seen.append(S.clone())
        return logits

    S, _ = sample_sequences(decode, x, num_steps=4, temperature=1.0, generator=torch.Generator().manual_seed(0),
                            order="confidence")
    assert torch.equal(S[:, :4], x.S[:, :4]) and (S[x.design_mask] != MASK_INDEX).all()
    for b in range(2):
        design = x.design_mask[b].nonzero().squeeze(1)
        n = len(design)
        masked = [int((s[b] == MASK_INDEX).sum()) for s in seen] + [0]
        assert masked[0] == n
        times = torch.linspace(1, 0, 5)
        for i in range(4):  # the count: round(p * still masked), the last step everything
            p = float((times[i] - times[i + 1]) / times[i]) if i < 3 else 1.0
            assert masked[i] - masked[i + 1] == round(masked[i] * p)
        # with these logits (and a draw that is almost always the peak) the surest are the last residues
        first = (seen[1][b] != MASK_INDEX) & x.design_mask[b]
        assert int(first.sum()) == round(n * 0.25)
        assert first.nonzero().min() >= L - int(first.sum()) - 2
    tied = torch.arange(L)
    tied[30:35] = torch.arange(20, 25)  # 30-34 take 20-24's residue types
    S, _ = sample_sequences(lambda S, t: torch.randn(2, L, 21), x, num_steps=5, tied=tied, order="confidence",
                            generator=torch.Generator().manual_seed(1))
    assert torch.equal(S[:, 30:35], S[:, 20:25]) and (S[x.design_mask] != MASK_INDEX).all()
    with pytest.raises(ValueError, match="order"):
        sample_sequences(decode, x, order="left-to-right")


def test_presets_and_config_validation():
    assert PROTEIN_PRESETS["paper"].hidden == 128 and PROTEIN_PRESETS["paper"].k == 30
    assert PROTEIN_PRESETS["paper"].encoder_layers == 3 and PROTEIN_PRESETS["paper"].decoder_layers == 3
    with pytest.raises(ValueError):
        ProteinModelConfig(k=0)


def test_decode_at_rows_equals_the_full_pass_there(chains):
    torch.manual_seed(0)
    model = ProteinDenoiser(PROTEIN_PRESETS["paper"]).eval()
    x = _batch(chains, n=3, max_length=70)  # padded: chains of different lengths
    g = torch.Generator().manual_seed(1)
    S = torch.where(torch.rand(x.S.shape, generator=g) < 0.5, torch.full_like(x.S, MASK_INDEX), x.S)
    rows = (S == MASK_INDEX) & x.mask
    with torch.no_grad():
        enc = model.encode(x)
        full = model.decode(enc, S).prediction
        part = model.decode(enc, S, rows=rows).prediction
        assert torch.allclose(part[rows], full[rows], atol=1e-5) and (part[~rows] == 0).all()
        # a batch-1 encoding broadcast over several sequences (the design path)
        x1 = chains.batch(chains.split("ts50")[:1], max_length=70)
        enc1 = model.encode(x1)
        S4 = torch.where(torch.rand((4, x1.S.shape[1]), generator=g) < 0.3, MASK_INDEX, x1.S.expand(4, -1))
        r4 = S4 == MASK_INDEX
        full4 = model.decode(enc1, S4).prediction
        part4 = model.decode(enc1, S4, rows=r4).prediction
        assert torch.allclose(part4[r4], full4[r4], atol=1e-5)
        assert (model.decode(enc1, S4, rows=torch.zeros_like(r4)).prediction == 0).all()
        # a capture of the last decoder layer needs it everywhere: rows are then ignored
        out = model.decode(enc, S, capture=("dec3",), rows=rows)
        assert torch.allclose(out.prediction, full, atol=1e-5) and out.hiddens["dec3"].shape[:2] == S.shape
