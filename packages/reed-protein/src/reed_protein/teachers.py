"""Teachers for inverse folding, in the paper's three slots (its AlphaFold3 embeddings are unreachable
offline, so the slots are filled with what can be computed or trained here):

* "single" (per residue): ``BackboneTeacher``: 3-state DSSP secondary structure (one-hot), sin/cos of
  phi/psi/omega, the strongest donor/acceptor H-bond energies and C-alpha neighbour counts at 8/12 Å (burial);
  or ``ESM2Teacher``: ESM-2 embeddings of the native sequence through fair-esm, loaded from a local checkpoint.
* "pair" (per kNN edge): ``PairGeometryTeacher``: CB-CB distance RBFs, sin/cos of the trRosetta orientations
  omega/theta/phi and the H-bond energies in both directions, at the same kNN edges as the denoiser.
* "structure" (per residue): ``StructureEncoderTeacher``: the encoder of a small MPNN pretrained in-project
  on the training chains by masked-residue prediction (weights ship in ``reed_protein/weights``).
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from reed_core import Batch, Representation, Teacher
from reed_core.teacher import load_frozen_weights

from .constants import ALPHABET, X_INDEX
from .data import ProteinBatch
from .features import knn_graph, rbf
from .geometry import backbone_dihedrals, edge_orientations, hbond_energy, secondary_structure
from .model import ProteinDenoiser, ProteinModelConfig

__all__ = ["BackboneTeacher", "ESM2Teacher", "PairGeometryTeacher", "StructureEncoderTeacher", "backbone_features",
           "load_esm2"]

SINGLE_DIM = 3 + 6 + 2 + 2
PAIR_DIM = 16 + 6 + 2


def backbone_features(x: ProteinBatch) -> torch.Tensor:
    X = x.X.float()
    ss = F.one_hot(secondary_structure(X, x.mask), 3).float()
    ang, valid = backbone_dihedrals(X, x.mask)
    trig = torch.cat([torch.sin(ang) * valid, torch.cos(ang) * valid], -1)
    e = hbond_energy(X, x.mask)
    hb = torch.stack([e.min(2).values, e.min(1).values], -1) / 3.0
    ca = X[:, :, 1]
    d = torch.cdist(ca, ca)
    pair = x.mask[:, :, None] & x.mask[:, None, :]
    counts = torch.stack([((d < r) & pair).sum(-1) for r in (8.0, 12.0)], -1).float() / torch.tensor([10.0, 25.0], device=X.device)
    return torch.cat([ss, trig, hb, counts.to(X)], -1) * x.mask[..., None]


class BackboneTeacher(Teacher):
    def __init__(self) -> None:
        super().__init__("single", SINGLE_DIM, "token")

    def encode(self, batch: Batch) -> Representation:
        x: ProteinBatch = batch.x0
        return Representation(backbone_features(x), x.mask, "token")


class PairGeometryTeacher(Teacher):
    """Edge features at the kNN edges of a denoiser with neighbourhood size ``k``."""

    def __init__(self, k: int) -> None:
        super().__init__("pair", PAIR_DIM, "pair")
        self.k = k

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

    def encode(self, batch: Batch) -> Representation:
        x: ProteinBatch = batch.x0
        X = x.X.float()
        E_idx, _, edge_mask = knn_graph(X, x.mask, self.k)
        o = edge_orientations(X, E_idx)
        e = hbond_energy(X, x.mask)
        e_ij = torch.gather(e, 2, E_idx)
        e_ji = torch.gather(e.transpose(1, 2), 2, E_idx)
        feats = torch.cat([rbf(o[..., 0]), torch.sin(o[..., 1:]), torch.cos(o[..., 1:]),
                           torch.stack([e_ij, e_ji], -1) / 3.0], -1)
        return Representation(feats * edge_mask[..., None], edge_mask, "pair", E_idx)


STRUCTURE_CONFIG = ProteinModelConfig(hidden=64, encoder_layers=3, decoder_layers=1, k=24, dropout=0.0)


def default_structure_weights() -> Path:
    return Path(str(resources.files("reed_protein") / "weights" / "structure_encoder.safetensors"))


class StructureEncoderTeacher(Teacher):
    """Per-residue features from the last encoder layer of the pretrained structure model."""

    def __init__(self, model: ProteinDenoiser | None = None, weights: str | os.PathLike | None = None) -> None:
        net = model or ProteinDenoiser(STRUCTURE_CONFIG)
        super().__init__("structure", net.cfg.hidden, "token")
        self.net = net
        if model is None:
            load_frozen_weights(self.net, weights or default_structure_weights(),
                                "train them with packages/reed-protein/scripts/train_structure_teacher.py")
        self.freeze()

    def encode(self, batch: Batch) -> Representation:
        x: ProteinBatch = batch.x0
        name = f"enc{self.net.cfg.encoder_layers}"
        enc = self.net.encode(x, capture=(name,))
        return Representation(enc.hiddens[name], x.mask, "token")


# ----------------------------------------------------------------------------------------------- ESM-2


def load_esm2(path: str | os.PathLike):
    """Load a fair-esm ESM-2 checkpoint (``esm2_*.pt``) from a local path with ``weights_only=True``
    (safe on torch >= 2.6; only argparse.Namespace is allowed besides tensors). Returns (model, alphabet)."""
    import esm

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ESM-2 checkpoint")
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: not a loadable ESM checkpoint ({type(e).__name__}: {e})") from None
    regression = None
    reg_path = path.with_name(path.stem + "-contact-regression.pt")
    if reg_path.is_file():
        regression = torch.load(reg_path, map_location="cpu", weights_only=True)
    model, alphabet = esm.pretrained.load_model_and_alphabet_core(path.stem, data, regression)
    return model.eval(), alphabet


class ESM2Teacher(Teacher):
    """ESM-2 per-residue embeddings of the native sequence (layer ``layer``, default the last; BOS/EOS
    dropped so positions align with residues; X becomes <unk>)."""

    def __init__(self, model, alphabet, layer: int | None = None, name: str = "single") -> None:
        super().__init__(name, model.embed_dim, "token")
        self.model, self.alphabet = model, alphabet
        self.layer = model.num_layers if layer is None else layer
        table = [alphabet.get_idx(a) if a != "X" else alphabet.unk_idx for a in ALPHABET]
        self.register_buffer("to_esm", torch.tensor(table), persistent=False)
        self.freeze()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layer={self.layer}"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, layer: int | None = None) -> ESM2Teacher:
        return cls(*load_esm2(path), layer=layer)

    def encode(self, batch: Batch) -> Representation:
        x: ProteinBatch = batch.x0
        B, L = x.S.shape
        tok = self.to_esm[x.S.clamp(max=X_INDEX)]
        tok = torch.where(x.chain_idx > 0, tok, torch.full_like(tok, self.alphabet.padding_idx))
        bos = torch.full((B, 1), self.alphabet.cls_idx, device=tok.device)
        eos = torch.full((B, 1), self.alphabet.padding_idx, device=tok.device)
        tokens = torch.cat([bos, tok, eos], 1)
        lengths = (x.chain_idx > 0).sum(1)
        tokens[torch.arange(B), lengths + 1] = self.alphabet.eos_idx
        out = self.model(tokens, repr_layers=[self.layer])["representations"][self.layer][:, 1:L + 1]
        return Representation(out, x.mask, "token")


