"""Designing sequences for structures: fixed positions, designed chains, omitted / biased residue types,
ProteinMPNN-style FASTA output and per-residue probabilities."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .constants import AA_TO_INDEX, ALPHABET, MASK_INDEX, X_INDEX, decode, encode
from .data import pad_batch
from .model import ProteinDenoiser
from .sampler import design_batch, tied_union
from .structure import Structure, StructureError


class DesignError(ValueError):
    """Bad design options (unknown chains, positions out of range, bad residue letters)."""


_POS = re.compile(r"^([A-Za-z0-9])(-?\d+)([A-Za-z]?)(?:-(-?\d+)([A-Za-z]?))?$")
log = logging.getLogger(__name__)


def mpnn_rows(structure: Structure, cid: str, positions, what: str) -> np.ndarray:
    """The residues (0-based, within chain ``cid``) at ProteinMPNN's 1-based ``positions`` of that chain
    (``Chain.mpnn_positions``: file order unless the residue numbering has gaps). A position that is not an integer
    in 1..ProteinMPNN's chain length is a DesignError naming it (``what`` says where); a position in a numbering
    gap has no residue here (ProteinMPNN would hold a masked X there) and is skipped with a warning."""
    chain = structure.chain(cid)
    where, length = chain.mpnn_positions()
    items = positions if isinstance(positions, list) else [positions]
    if bad := [q for q in items if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= length]:
        gaps = f" in ProteinMPNN's numbering, with {length - len(chain)} gap position(s)" if length > len(chain) else ""
        raise DesignError(f"{structure.name}: {what}: {cid}{bad[0]!r} is not a position 1..{length} of chain "
                          f"{cid}{gaps}")
    residue = np.full(length, -1, np.int64)
    residue[where] = np.arange(len(chain))
    rows = residue[np.asarray(items, np.int64) - 1]
    if (rows < 0).any():
        log.warning("%s: %s: %s in a gap of chain %s's residue numbering (no residue; skipped)", structure.name,
                    what, ", ".join(f"{cid}{q}" for q, r in zip(items, rows, strict=True) if r < 0), cid)
    return rows[rows >= 0]


def _residue_rows(structure: Structure, cid: str, array: np.ndarray) -> np.ndarray | None:
    """A per-residue array of chain ``cid`` with one row per residue here, given one row per residue or per
    position of ProteinMPNN's numbering (gap rows dropped); None when its length is neither."""
    chain = structure.chain(cid)
    if len(array) == len(chain):
        return array
    where, length = chain.mpnn_positions()
    return array[where] if len(array) == length else None


def _row_count(structure: Structure, cid: str) -> str:
    """How many rows a per-residue array of chain ``cid`` may have, for error messages."""
    n, length = len(structure.chain(cid)), structure.chain(cid).mpnn_positions()[1]
    return f"{n}" if length == n else f"{n} (or {length}, ProteinMPNN's numbering with its gaps)"


def parse_fixed_positions(spec: str | dict | None, structure: Structure) -> dict[str, set[int]]:
    """``"A1-10,A15,B7A"`` (author numbering, with insertion codes) or ProteinMPNN's fixed positions of one
    structure, ``{chain: [1-based positions]}`` (its ``--fixed_positions_jsonl`` entry; ``mpnn_rows``) -> {chain: set
    of residue positions (0-based, file order)}. Raises DesignError naming the offending item."""
    out: dict[str, set[int]] = {}
    if not spec:
        return out
    if isinstance(spec, dict):
        for cid, positions in spec.items():
            if cid not in {c.chain_id for c in structure.chains}:
                raise DesignError(f"{structure.name}: fixed positions for chain {cid!r}, which is not in the "
                                  f"structure (chains {[c.chain_id for c in structure.chains]})")
            out.setdefault(cid, set()).update(mpnn_rows(structure, cid, positions, "fixed positions").tolist())
        return out
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        m = _POS.match(item)
        if not m:
            raise DesignError(f"{structure.name}: fixed position {item!r} is not like A12, A12B or A1-10")
        cid, start, ins_a, stop, ins_b = m.groups()
        try:
            chain = structure.chain(cid)
        except StructureError as e:
            raise DesignError(str(e)) from None
        labels = {(int(r), str(c).strip()): k for k, (r, c) in enumerate(zip(chain.res_ids, chain.ins_codes, strict=True))}
        a = (int(start), ins_a)
        if a not in labels:
            raise DesignError(f"{structure.name}: chain {cid} has no residue {start}{ins_a} (fixed position {item!r})")
        if stop is None:
            out.setdefault(cid, set()).add(labels[a])
            continue
        b = (int(stop), ins_b)
        if b not in labels:
            raise DesignError(f"{structure.name}: chain {cid} has no residue {stop}{ins_b} (fixed position {item!r})")
        lo, hi = sorted((labels[a], labels[b]))
        out.setdefault(cid, set()).update(range(lo, hi + 1))
    return out


def _chain_starts(structure: Structure) -> dict[str, int]:
    """Each chain's first position in the structure's residues, chains concatenated in file order."""
    lengths = [len(c) for c in structure.chains]
    return {c.chain_id: int(s) for c, s in zip(structure.chains, np.cumsum([0, *lengths[:-1]]), strict=True)}


def tied_index(structure: Structure, design_chains: Sequence[str], fixed: dict[str, set[int]], *,
               groups: Sequence[dict] | None = None, homo_oligomer: bool = False) -> np.ndarray | None:
    """(L,) for each residue the residue it is tied to (itself when untied), or None when nothing is tied.

    ``groups``: ProteinMPNN's tied positions of one structure, a list of ``{chain: [1-based positions]}`` in its
    numbering (``mpnn_rows``), each dict one group. ``homo_oligomer``: the k-th residue of every designed chain tied
    (the chains must be as long)."""
    offsets = _chain_starts(structure)
    lo = sum(len(c) for c in structure.chains)
    groups = list(groups or [])
    n_json = len(groups)
    if homo_oligomer:
        lengths = {c: len(structure.chain(c)) for c in design_chains}
        if len(set(lengths.values())) != 1:
            raise DesignError(f"{structure.name}: --homo-oligomer needs designed chains of equal length, got {lengths}")
        groups += [{c: [k + 1] for c in design_chains} for k in range(next(iter(lengths.values())))]
    if not groups:
        return None
    tied, seen = np.arange(lo), set()
    for g, group in enumerate(groups):
        if not isinstance(group, dict):
            raise DesignError(f"{structure.name}: tied group {g + 1} is not a {{chain: [positions]}} mapping")
        members = []
        for cid, positions in group.items():
            if cid not in offsets:
                raise DesignError(f"{structure.name}: tied group {g + 1}: no chain {cid!r}")
            if cid not in design_chains:
                raise DesignError(f"{structure.name}: tied group {g + 1}: chain {cid} is not designed")
            # homo-oligomer groups count residues in file order; a tied-positions JSON uses ProteinMPNN's numbering
            rows = (np.asarray(positions) - 1 if g >= n_json else mpnn_rows(structure, cid, positions,
                                                                             f"tied group {g + 1}"))
            for r in rows.tolist():
                if r in fixed.get(cid, ()):
                    raise DesignError(f"{structure.name}: tied group {g + 1}: {structure.chain(cid).labels()[r]} is a "
                                      f"fixed position")
                members.append(offsets[cid] + r)
        if seen & set(members):
            raise DesignError(f"{structure.name}: tied group {g + 1} shares positions with an earlier group")
        seen |= set(members)
        tied[members] = min(members)
    return tied


def parse_omit(letters: str | None) -> torch.Tensor:
    omit = torch.zeros(len(ALPHABET), dtype=torch.bool)
    for a in (letters or "").upper().replace(",", ""):
        if a not in AA_TO_INDEX:
            raise DesignError(f"--omit-aa: unknown residue letter {a!r}; use one of {ALPHABET}")
        omit[AA_TO_INDEX[a]] = True
    return omit


def parse_bias(spec: str | None) -> torch.Tensor:
    bias = torch.zeros(len(ALPHABET))
    for item in (s.strip() for s in (spec or "").split(",")):
        if not item:
            continue
        try:
            a, v = item.split(":")
            bias[AA_TO_INDEX[a.strip().upper()]] += float(v)
        except (ValueError, KeyError):
            raise DesignError(f"--bias-aa: {item!r} is not like A:0.5 (letter from {ALPHABET})") from None
        if not math.isfinite(float(v)):
            raise DesignError(f"--bias-aa: {item!r}: the bias must be a finite number")
    return bias


def _per_chain(structure: Structure, spec, what: str, expected: str, dtype) -> tuple[np.ndarray, list]:
    """A ProteinMPNN per-residue JSON entry of one structure, ``{chain: value}``, checked to name its chains: an
    (L, 21) zero array of ``dtype`` over all chains and (chain, first position, length, value) per listed chain."""
    if not isinstance(spec, dict):
        raise DesignError(f"{structure.name}: the per-residue {what} must map chains to {expected}")
    starts = _chain_starts(structure)
    for cid in spec:
        if cid not in starts:
            raise DesignError(f"{structure.name}: per-residue {what} for chain {cid!r}, which is not in the structure "
                              f"(chains {list(starts)})")
    out = np.zeros((sum(len(c) for c in structure.chains), len(ALPHABET)), dtype)
    return out, [(cid, starts[cid], len(structure.chain(cid)), v) for cid, v in spec.items()]


def residue_bias(structure: Structure, spec: dict | None) -> np.ndarray | None:
    """ProteinMPNN's per-residue bias of one structure, ``{chain: [[21 logit biases, order ALPHABET] per residue]}``
    (a row per residue, or per position of ProteinMPNN's numbering: ``Chain.mpnn_positions``), as an (L, 21) array
    over all chains (zeros for chains not listed); None when ``spec`` is None."""
    if spec is None:
        return None
    out, entries = _per_chain(structure, spec, "bias", "(residues x 21) lists", np.float64)
    for cid, start, n, rows in entries:
        try:
            m = np.asarray(rows, np.float64)
        except (TypeError, ValueError):
            m = np.zeros(0)
        given = m.shape
        if m.ndim != 2 or m.shape[1] != len(ALPHABET) or (m := _residue_rows(structure, cid, m)) is None:
            raise DesignError(f"{structure.name}: per-residue bias of chain {cid} must be {_row_count(structure, cid)} "
                              f"rows of {len(ALPHABET)} numbers (order {ALPHABET}), got shape {given}")
        if not np.isfinite(m).all():
            raise DesignError(f"{structure.name}: per-residue bias of chain {cid} holds a non-finite number")
        out[start:start + n] = m
    return out


def parse_temperatures(spec: str | float | Sequence[float]) -> tuple[float, ...]:
    """Sampling temperatures: a number, a sequence of them, or a string of them separated by commas or spaces
    (ProteinMPNN's ``--sampling_temp "0.1 0.2"``). Each must be a finite number > 0."""
    if isinstance(spec, str):
        items = [t for t in re.split(r"[,\s]+", spec.strip()) if t]
        try:
            temps = tuple(float(t) for t in items)
        except ValueError:
            raise DesignError(f"--temperature: {spec!r} is not a list of numbers like 0.1,0.2") from None
    else:
        temps = (float(spec),) if isinstance(spec, (int, float)) else tuple(float(t) for t in spec)
    if not temps or not all(math.isfinite(t) and t > 0 for t in temps):
        raise DesignError(f"--temperature: each must be a finite number > 0, got {spec!r}")
    return temps


def residue_omit(structure: Structure, spec: dict | None) -> np.ndarray | None:
    """ProteinMPNN's omitted residue types per residue of one structure (its ``--omit_AA_jsonl`` entry),
    ``{chain: [[[1-based positions], "letters"], ...]}`` (ProteinMPNN's numbering: ``mpnn_rows``), as an (L, 21)
    bool array over all chains (chains not listed omit nothing); None when ``spec`` is None."""
    if spec is None:
        return None
    out, entries = _per_chain(structure, spec, "omission", '[[[positions], "letters"], ...] lists', bool)
    for cid, start, _, items in entries:
        for m, item in enumerate(items if isinstance(items, list) else [items], start=1):
            ok = isinstance(item, list) and len(item) == 2 and isinstance(item[0], list) and isinstance(item[1], str)
            if not ok:
                raise DesignError(f"{structure.name}: per-residue omission of chain {cid}, item {m}: expected "
                                  f"[[1-based positions], \"letters\"], got {item!r}")
            positions, letters = item
            if unknown := sorted(set(letters.upper()) - set(ALPHABET)):
                raise DesignError(f"{structure.name}: per-residue omission of chain {cid}, item {m}: unknown residue "
                                  f"letters {unknown}; use {ALPHABET}")
            rows = start + mpnn_rows(structure, cid, positions, f"per-residue omission of chain {cid}, item {m}")
            out[np.ix_(rows, [AA_TO_INDEX[a] for a in letters.upper()])] = True
    return out


PSSM_KEYS = ("pssm_coef", "pssm_bias", "pssm_log_odds")


def check_sampling_options(*, pssm_multi: float = 0.0, pssm_threshold: float | None = None,
                           backbone_noise: float = 0.0) -> None:
    """The numeric design options that do not depend on a structure, checked once (the CLI before any input)."""
    if not (math.isfinite(pssm_multi) and 0.0 <= pssm_multi <= 1.0):
        raise DesignError(f"--pssm-multi must be a number in [0, 1], got {pssm_multi}")
    if pssm_threshold is not None and math.isnan(pssm_threshold):
        raise DesignError("--pssm-threshold must be a number, got nan")
    if not (math.isfinite(backbone_noise) and backbone_noise >= 0):
        raise DesignError(f"--backbone-noise must be a finite number of Å >= 0, got {backbone_noise}")


def residue_pssm(structure: Structure, spec: dict | None, *, multi: float = 0.0, threshold: float | None = None
                 ) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
    """ProteinMPNN's PSSM of one structure (its ``--pssm_jsonl`` entry), ``{chain: {"pssm_coef": [per residue],
    "pssm_bias": [[21 probabilities] per residue], "pssm_log_odds": [[21] per residue]}}`` (order ALPHABET; a row per
    residue, or per position of ProteinMPNN's numbering: ``Chain.mpnn_positions``), as the
    sampler takes it: ``(weight (L,), target (L,21))``, weight ``multi * pssm_coef`` (``--pssm_multi``) and each
    ``pssm_bias`` row normalised (None when ``multi`` is 0), and the (L,21) bool types with ``pssm_log_odds >
    threshold`` (``--pssm_threshold`` with ``--pssm_log_odds_flag``; None when ``threshold`` is None). Chains not
    listed get weight 0 and allow every type; only the keys in use are required."""
    check_sampling_options(pssm_multi=multi, pssm_threshold=threshold)
    if spec is None or (multi == 0 and threshold is None):
        return None, None
    target, entries = _per_chain(structure, spec, "PSSM", "objects with " + ", ".join(PSSM_KEYS), np.float64)
    weight, allowed = np.zeros(len(target)), np.ones(target.shape, bool)
    needed = (("pssm_coef", "pssm_bias") if multi > 0 else ()) + (("pssm_log_odds",) if threshold is not None else ())
    for cid, start, n, entry in entries:
        where = f"{structure.name}: PSSM of chain {cid}"
        if not isinstance(entry, dict):
            raise DesignError(f"{where} must be an object with {', '.join(needed)}, got {type(entry).__name__}")
        arrays = {}
        for key in needed:
            if key not in entry:
                flag = "--pssm-threshold" if key == "pssm_log_odds" else "--pssm-multi"
                raise DesignError(f"{where} has no {key!r} (needed by {flag})")
            try:
                a = np.asarray(entry[key], np.float64)
            except (TypeError, ValueError):
                a = np.zeros(0)
            given = a.shape
            fits = a.ndim == 1 if key == "pssm_coef" else (a.ndim == 2 and a.shape[1] == len(ALPHABET))
            if not fits or (a := _residue_rows(structure, cid, a)) is None:
                what = "one number" if key == "pssm_coef" else f"{len(ALPHABET)} numbers (order {ALPHABET})"
                raise DesignError(f"{where}: {key} must be {what} per residue ({_row_count(structure, cid)} "
                                  f"residues), got shape {given}")
            if not np.isfinite(a).all():
                raise DesignError(f"{where}: {key} holds a non-finite number")
            arrays[key] = a
        if multi > 0:
            coef, rows = arrays["pssm_coef"], arrays["pssm_bias"]
            if (bad := np.flatnonzero((coef < 0) | (coef > 1))).size:
                raise DesignError(f"{where}: pssm_coef must lie in [0, 1], got {coef[bad[0]]} at residue {bad[0] + 1}")
            if (bad := np.flatnonzero((rows < 0).any(1))).size:
                raise DesignError(f"{where}: pssm_bias holds a negative probability at residue {bad[0] + 1}")
            total = rows.sum(1)
            if (bad := np.flatnonzero((coef > 0) & (total <= 0))).size:
                raise DesignError(f"{where}: pssm_bias of residue {bad[0] + 1} is all zeros but its pssm_coef is "
                                  f"{coef[bad[0]]}")
            weight[start:start + n] = multi * coef
            target[start:start + n] = rows / np.where(total > 0, total, 1.0)[:, None]
        if threshold is not None:
            allowed[start:start + n] = arrays["pssm_log_odds"] > threshold
    return ((weight, target) if multi > 0 else None), (allowed if threshold is not None else None)


@dataclass(frozen=True)
class DesignResult:
    name: str
    designed_chains: tuple[str, ...]
    fixed_chains: tuple[str, ...]
    native: str  # chains joined by "/"
    native_score: float
    native_global_score: float
    sequences: tuple[str, ...]
    scores: tuple[float, ...]
    global_scores: tuple[float, ...]
    recoveries: tuple[float, ...]
    probs: np.ndarray  # (L, 21) probabilities with designed positions masked
    labels: tuple[str, ...]
    temperatures: tuple[float, ...] = ()  # each design's sampling temperature
    # with design(sample_probs=True), per design (ProteinMPNN's --save_probs): the distribution each designed
    # residue was drawn from (N, L, 21; 0 where not designed), the score pass's log-probabilities (N, L, 21; the
    # scored residues masked, NaN rows elsewhere) and the tokens (N, L)
    sample_probs: np.ndarray | None = None
    sample_log_probs: np.ndarray | None = None
    tokens: np.ndarray | None = None


def _structure_item(structure: Structure, design_chains: Sequence[str], fixed: dict[str, set[int]]) -> dict:
    X, S, ridx, cidx, design = [], [], [], [], []
    for n, chain in enumerate(structure.chains, start=1):
        X.append(chain.coords)
        S.append(np.asarray(encode(chain.seq)))
        ridx.append(chain.res_ids + 1000 * n)  # chains far apart; chain_idx also separates them
        cidx.append(np.full(len(chain), n))
        d = np.full(len(chain), chain.chain_id in design_chains)
        for k in fixed.get(chain.chain_id, ()):
            d[k] = False
        design.append(d)
    return {"X": np.concatenate(X), "S": np.concatenate(S), "residue_idx": np.concatenate(ridx),
            "chain_idx": np.concatenate(cidx), "design_mask": np.concatenate(design)}


def _masked_log_probs(model: ProteinDenoiser, enc, S: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """log-probabilities of the 21 types (B,L,21) at ``positions`` (B,L), predicted with all of them masked;
    NaN rows elsewhere (not computed)."""
    S_in = torch.where(positions, torch.full_like(S, MASK_INDEX), S)
    lp = F.log_softmax(model.decode(enc, S_in, rows=positions).prediction.float(), -1)
    return lp.masked_fill(~positions[..., None], float("nan"))


def _residue_logp(model: ProteinDenoiser, enc, S: torch.Tensor, positions: torch.Tensor,
                  log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """log p(S_i) (B,L) at ``positions`` (B,L), predicted with all of them masked (or read from their
    ``_masked_log_probs``); 0 elsewhere."""
    if log_probs is None:
        log_probs = _masked_log_probs(model, enc, S, positions)
    lp = log_probs.gather(-1, S[..., None])[..., 0]
    return torch.where(positions, lp, 0.0)


def _scores(model: ProteinDenoiser, enc, S: torch.Tensor, x, positions: torch.Tensor,
            log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood per sequence over ``positions`` (B,L) with those positions masked."""
    w = positions.float()
    return -(_residue_logp(model, enc, S, positions, log_probs) * w).sum(1) / w.sum(1).clamp_min(1)


@torch.no_grad()
def design(model: ProteinDenoiser, structure: Structure, *, chains: Sequence[str] | None = None,
           fixed_positions: str | dict | None = None, num_seqs: int = 1, temperature: float | Sequence[float] = 0.1,
           num_steps: int = 20, omit: torch.Tensor | None = None, bias: torch.Tensor | None = None, seed: int = 0,
           batch_size: int = 8, device: str = "cpu", tied_positions: Sequence[dict] | None = None,
           homo_oligomer: bool = False, bias_per_residue: dict | None = None,
           omit_per_residue: dict | None = None, pssm: dict | None = None, pssm_multi: float = 0.0,
           pssm_threshold: float | None = None, backbone_noise: float = 0.0, sample_probs: bool = False,
           order: str = "random") -> DesignResult:
    """Design ``num_seqs`` sequences for ``chains`` of ``structure`` (the rest stays native) at each
    ``temperature`` in turn (one or several, as ProteinMPNN's ``--sampling_temp``). ``bias`` (21,) is added to
    every residue's logits, ``bias_per_residue`` (ProteinMPNN's ``{chain: (L x 21)}``) to each residue's;
    ``omit`` (21,) bool bans residue types everywhere, ``omit_per_residue`` (ProteinMPNN's ``{chain: [[[positions],
    "letters"], ...]}``) at the listed residues. ``pssm`` (ProteinMPNN's ``{chain: {"pssm_coef", "pssm_bias",
    "pssm_log_odds"}}``): its probabilities mixed in at weight ``pssm_multi * pssm_coef`` and/or the types whose
    log-odds are at most ``pssm_threshold`` kept at 0.1 % of their mass (``residue_pssm``, ``sample_sequences``).
    ``backbone_noise``: Gaussian noise (Å) on every backbone atom, drawn anew for each design (ProteinMPNN's
    ``--backbone_noise``); the scores are those of the clean structure. ``sample_probs``: also keep, per design,
    the distributions its residues were drawn from, the score pass's log-probabilities and the tokens
    (``DesignResult.sample_probs`` / ``sample_log_probs`` / ``tokens``; ProteinMPNN's ``--save_probs``).
    ``order``: which masked residues each sampling step unmasks (``sampler.sample_sequences``)."""
    temperatures = parse_temperatures(temperature)
    check_sampling_options(pssm_multi=pssm_multi, pssm_threshold=pssm_threshold, backbone_noise=backbone_noise)
    all_ids = [c.chain_id for c in structure.chains]
    design_chains = list(chains) if chains else all_ids
    for c in design_chains:
        if c not in all_ids:
            raise DesignError(f"{structure.name}: no chain {c!r} to design; chains are {all_ids}")
    if num_seqs < 1 or batch_size < 1:
        raise DesignError(f"--num-seqs and --batch-size must be >= 1, got {num_seqs}, {batch_size}")
    fixed = parse_fixed_positions(fixed_positions, structure)
    item = _structure_item(structure, design_chains, fixed)
    tied = tied_index(structure, design_chains, fixed, groups=tied_positions, homo_oligomer=homo_oligomer)
    if tied is not None:
        if not (item["design_mask"][tied] == item["design_mask"]).all():  # a member without backbone
            raise DesignError(f"{structure.name}: a tied group mixes designable residues with masked ones")
        tied = torch.as_tensor(tied, device=device)
    per_residue = residue_bias(structure, bias_per_residue)
    if per_residue is not None:
        per_residue = torch.as_tensor(per_residue, dtype=torch.float32)
        bias = per_residue + (bias if bias is not None else 0.0)
    if not item["design_mask"].any():
        raise DesignError(f"{structure.name}: nothing to design (every residue of {design_chains} is fixed or masked)")
    labels = tuple(lab for c in structure.chains for lab in c.labels())
    omit_res = residue_omit(structure, omit_per_residue)
    if omit_res is not None:
        omit_res = torch.as_tensor(omit_res)
        omit_res |= omit.cpu() if omit is not None else False
        omit_res[:, X_INDEX] = True
        # checked here to name the residue: a tied group omits what any member omits, as the sampler applies it
        grouped = tied_union(omit_res, tied.cpu()) if tied is not None else omit_res
        if (stuck := np.flatnonzero(grouped.all(-1).numpy() & item["design_mask"])).size:
            raise DesignError(f"{structure.name}: every amino acid is omitted at residue {labels[stuck[0]]}")
        omit = omit_res.to(device)
    mix, allowed = residue_pssm(structure, pssm, multi=pssm_multi, threshold=pssm_threshold)
    if mix is not None:
        mix = tuple(torch.as_tensor(a, dtype=torch.float32, device=device) for a in mix)
    if allowed is not None:
        allowed = torch.as_tensor(allowed, device=device)
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    one = pad_batch([item]).to(device)
    enc1 = model.encode(one)
    native = one.S
    scored = one.design_mask & (native != X_INDEX)
    valid = one.mask & (native != X_INDEX)
    native_score = float(_scores(model, enc1, native, one, scored)[0])
    native_global = float(_scores(model, enc1, native, one, valid)[0])
    logits = model.decode(enc1, torch.where(one.design_mask, torch.full_like(native, MASK_INDEX), native)).prediction
    probs = F.softmax(logits.float(), -1)[0].cpu().numpy()
    seqs, scores, gscores, recs, temps, drawn, logps, toks = [], [], [], [], [], [], [], []
    for temp in temperatures:  # one generator throughout: the first temperature's designs are a lone run's
        for lo in range(0, num_seqs, batch_size):
            b = min(batch_size, num_seqs - lo)
            x = pad_batch([item] * b).to(device)
            enc = enc1  # the structure encoded once: the decoder broadcasts it over the b sequences
            if backbone_noise > 0:  # ... unless each design sees its own noisy copy
                noise = torch.randn(x.X.shape, generator=g, device=device)
                enc = model.encode(x.with_(X=x.X + backbone_noise * noise))
            S, _, *p = design_batch(model, x, num_steps=num_steps, temperature=temp, generator=g, bias=bias,
                                    omit=omit, encoding=enc, tied=tied, pssm=mix, pssm_allowed=allowed,
                                    return_probs=sample_probs, order=order)
            positions = x.design_mask & (native.expand_as(S) != X_INDEX)
            lp = _masked_log_probs(model, enc1, S, positions)
            sc = _scores(model, enc1, S, x, positions, lp)
            if sample_probs:
                drawn.append(p[0].cpu().numpy())
                logps.append(lp.cpu().numpy())
                toks.append(S.cpu().numpy().astype(np.int32))
            gs = _scores(model, enc1, S, x, x.mask)
            rec = ((S == native) & scored).sum(1).float() / scored.sum(1).clamp_min(1)
            for k in range(b):
                seqs.append(_join(structure, S[k].cpu().numpy()))
                scores.append(float(sc[k]))
                gscores.append(float(gs[k]))
                recs.append(float(rec[k]))
                temps.append(temp)
    return DesignResult(structure.name, tuple(design_chains), tuple(c for c in all_ids if c not in design_chains),
                        _join(structure, native[0].cpu().numpy()), native_score, native_global, tuple(seqs),
                        tuple(scores), tuple(gscores), tuple(recs), probs, labels, tuple(temps),
                        *((np.concatenate(drawn), np.concatenate(logps), np.concatenate(toks)) if sample_probs
                          else ()))


@dataclass(frozen=True)
class ScoreResult:
    """Per sequence: ``score`` (mean negative log-likelihood over the scored chains' residues, each predicted
    with all scored residues masked: the ``score`` of the design headers), ``global_score`` (the same over every
    residue) and ``log_probs`` (L,): the global score's per-residue terms, log p(residue) with every residue
    masked (NaN where X or no backbone). ``conditional`` (with ``score(conditional=True)``): for every residue, the
    log-probabilities of all 21 types with that residue alone masked and every other one given (ProteinMPNN's
    ``--conditional_probs_only``; a mutation's effect is the difference of two entries of a row)."""

    name: str
    sequences: tuple[str, ...]
    scores: tuple[float, ...]
    global_scores: tuple[float, ...]
    log_probs: np.ndarray  # (N, L)
    labels: tuple[str, ...]
    conditional: np.ndarray | None = None  # (N, L, 21) log p(type | every other residue, backbone); NaN rows: X / no backbone


def parse_fasta(text: str, source: str = "FASTA") -> list[str]:
    """The sequences of a FASTA text (records joined over lines); a DesignError for text that is not FASTA."""
    seqs: list[list[str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith(">"):
            seqs.append([])
        elif line:
            if not seqs:
                raise DesignError(f"{source}: line {n}: sequence before the first '>' header; not FASTA")
            seqs[-1].append(line)
    if not seqs or not all(seqs):
        raise DesignError(f"{source}: no sequences (or a header without one)")
    return ["".join(s) for s in seqs]


def _tokens(structure: Structure, seq: str, where: str) -> np.ndarray:
    """A sequence for ``structure``: its chains separated by '/' or concatenated, each chain one letter per residue
    or per position of ProteinMPNN's numbering (a chain with numbering gaps, as ProteinMPNN writes its designs:
    the gap positions are dropped)."""
    lengths = [len(c) for c in structure.chains]
    layout = [c.mpnn_positions() for c in structure.chains]
    parts = seq.split("/") if "/" in seq else [seq]
    for sizes in (lengths, [n for _, n in layout]):
        if "/" not in seq and len(seq) == sum(sizes):
            parts, lo = [], 0
            for n in sizes:
                parts.append(seq[lo:lo + n])
                lo += n
            break
    if len(parts) == len(lengths):  # ProteinMPNN's layout of a gapped chain: its residues' letters
        parts = [q if len(q) != n or n == len(c) else "".join(np.asarray(list(q))[w].tolist())
                 for q, c, (w, n) in zip(parts, structure.chains, layout, strict=True)]
    if [len(p) for p in parts] != lengths:
        raise DesignError(f"{where}: chain lengths {[len(p) for p in parts]} do not match the structure's {lengths} "
                          f"(chains {[c.chain_id for c in structure.chains]}; separate chains with '/')")
    if bad := sorted(set("".join(parts).upper()) - set(ALPHABET)):
        raise DesignError(f"{where}: unknown residue letters {bad}; use {ALPHABET}")
    return np.asarray(encode("".join(parts).upper()))


@torch.no_grad()
def conditional_log_probs(model: ProteinDenoiser, enc, S: torch.Tensor, positions: torch.Tensor, *,
                          edges_per_pass: int = 1 << 18) -> torch.Tensor:
    """(L, 21) log-probabilities at each of ``positions`` (L,) bool with that residue alone masked in the tokens
    ``S`` (L,) and every other residue given; NaN rows elsewhere. One decoder pass per position, batched over
    positions (about ``edges_per_pass`` kNN edges per pass) with the structure's encoding ``enc`` broadcast."""
    L = S.shape[0]
    out = torch.full((L, len(ALPHABET)), float("nan"), device=S.device)
    where = positions.nonzero()[:, 0]
    chunk = max(1, edges_per_pass // max(1, L * enc.E_idx.shape[-1]))
    for lo in range(0, len(where), chunk):
        pos = where[lo:lo + chunk]
        rows = torch.arange(len(pos), device=S.device)
        S_in = S.expand(len(pos), L).clone()
        S_in[rows, pos] = MASK_INDEX
        wanted = S_in == MASK_INDEX
        out[pos] = F.log_softmax(model.decode(enc, S_in, rows=wanted).prediction.float()[rows, pos], -1)
    return out


@torch.no_grad()
def score(model: ProteinDenoiser, structure: Structure, sequences: Sequence[str] | None = None, *,
          chains: Sequence[str] | None = None, device: str = "cpu", batch_size: int = 8,
          conditional: bool = False) -> ScoreResult:
    """Score the native sequence (``sequences=None``) or the given ones (``"AAA/BBB"`` per chain, or the chains
    concatenated) on ``structure`` (ProteinMPNN's ``--score_only``). ``chains``: the chains scored (default all).
    ``conditional``: also every residue's 21 log-probabilities given all the others (``ScoreResult.conditional``)."""
    all_ids = [c.chain_id for c in structure.chains]
    for c in chains or ():
        if c not in all_ids:
            raise DesignError(f"{structure.name}: no chain {c!r} to score; chains are {all_ids}")
    item = _structure_item(structure, list(chains) if chains else all_ids, {})
    toks = [item["S"]] if sequences is None else [_tokens(structure, s, f"sequence {k + 1}")
                                                   for k, s in enumerate(sequences)]
    model.eval()
    enc = model.encode(pad_batch([item]).to(device))  # once; the decoder broadcasts it over the sequences
    scores, gscores, logps = [], [], []
    for lo in range(0, len(toks), batch_size):
        chunk = toks[lo:lo + batch_size]
        x = pad_batch([{**item, "S": t} for t in chunk]).to(device)
        S, valid = x.S, x.mask & (x.S != X_INDEX)
        scores.extend(_scores(model, enc, S, x, x.design_mask & valid).tolist())  # design_mask implies a backbone
        lp = _residue_logp(model, enc, S, valid)
        w = valid.float()
        gscores.extend((-(lp * w).sum(1) / w.sum(1).clamp_min(1)).tolist())
        logps.append(torch.where(valid, lp, torch.nan).cpu().numpy())
    cond = None
    if conditional:
        one = pad_batch([item]).to(device)
        cond = np.stack([conditional_log_probs(model, enc, torch.as_tensor(t, device=device),
                                               one.mask[0] & (torch.as_tensor(t, device=device) != X_INDEX)).cpu().numpy()
                         for t in toks])
    seqs = tuple(_join(structure, t) for t in toks)
    labels = tuple(lab for c in structure.chains for lab in c.labels())
    return ScoreResult(structure.name, seqs, tuple(scores), tuple(gscores), np.concatenate(logps), labels, cond)


def _join(structure: Structure, tokens: np.ndarray) -> str:
    parts, lo = [], 0
    for c in structure.chains:
        parts.append(decode(tokens[lo:lo + len(c)]))
        lo += len(c)
    return "/".join(parts)


def to_fasta(result: DesignResult, *, seed: int, model_name: str, temperature: float | None = None) -> str:
    """ProteinMPNN's FASTA convention: the native first, then one record per design, numbered from 1 at each
    temperature (``temperature``: for a result that does not record its designs' temperatures)."""
    lines = [f">{result.name}, score={result.native_score:.4f}, global_score={result.native_global_score:.4f}, "
             f"fixed_chains={list(result.fixed_chains)}, designed_chains={list(result.designed_chains)}, "
             f"model_name={model_name}, seed={seed}", result.native]
    temps = result.temperatures or (temperature,) * len(result.sequences)
    if None in temps:
        raise ValueError("to_fasta: the result records no temperatures; pass temperature=")
    k = 0
    for n, (seq, s, gs, r, temp) in enumerate(zip(result.sequences, result.scores, result.global_scores,
                                                  result.recoveries, temps, strict=True)):
        k = 1 if n == 0 or temp != temps[n - 1] else k + 1
        lines.append(f">T={temp}, sample={k}, score={s:.4f}, global_score={gs:.4f}, seq_recovery={r:.4f}")
        lines.append(seq)
    return "\n".join(lines) + "\n"


__all__ = ["DesignError", "DesignResult", "ScoreResult", "check_sampling_options", "conditional_log_probs", "design", "mpnn_rows", "parse_bias", "parse_fasta", "parse_fixed_positions",
           "parse_omit", "parse_temperatures", "residue_bias", "residue_omit", "residue_pssm", "score", "tied_index", "to_fasta"]
