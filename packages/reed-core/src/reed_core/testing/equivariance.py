"""``assert_equivariant``: check E(3) behaviour of a function in float64 under random rotations,
reflections and translations, with a per-argument declaration of how each input and output transforms."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

Kind = Literal["point", "vector", "invariant"]
_KINDS = ("point", "vector", "invariant")


def random_rotation(generator: torch.Generator | None = None, reflect: bool = False,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A uniformly random 3x3 orthogonal matrix (det +1, or -1 when ``reflect``)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    return q.to(dtype)


def _apply(kind: Kind, x: torch.Tensor, rot: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    if kind == "invariant":
        return x
    if x.shape[-1] != 3:
        raise ValueError(f"a {kind} must have a last dim of 3, got {tuple(x.shape)}")
    y = x @ rot.T.to(x.dtype)
    return y + shift.to(x.dtype) if kind == "point" else y


def assert_equivariant(fn: Callable[..., Any], inputs: Mapping[str, Any], input_kinds: Mapping[str, Kind],
                       output_kinds: Sequence[Kind] | Mapping[str, Kind], *, trials: int = 3, reflections: bool = True,
                       translations: bool = True, atol: float = 1e-8, rtol: float = 1e-6, seed: int = 0,
                       output_mask: torch.Tensor | None = None) -> None:
    """Assert ``fn(**g.inputs) == g.fn(**inputs)`` for random g in E(3).

    ``input_kinds`` names how each tensor argument transforms (missing names are invariant).
    ``output_kinds`` describes the output: a sequence for a tuple output, a mapping for a dict or a dataclass
    (attribute names). ``output_mask`` (broadcastable over the leading dims of point/vector outputs) restricts
    the comparison of point/vector outputs to valid entries (e.g. real atoms).
    """
    out_kinds = list(output_kinds.values() if isinstance(output_kinds, Mapping) else output_kinds)
    if bad := [k for k in [*input_kinds.values(), *out_kinds] if k not in _KINDS]:
        raise ValueError(f"kind must be one of {_KINDS}, got {bad[0]!r}")
    g = torch.Generator().manual_seed(seed)
    reference = _outputs(fn(**inputs), output_kinds)
    for trial in range(trials):
        rot = random_rotation(g, reflect=reflections and trial % 2 == 1)
        shift = torch.randn(3, generator=g, dtype=torch.float64) * 3.0 if translations else torch.zeros(3, dtype=torch.float64)
        moved = {k: (_apply(input_kinds[k], v, rot, shift) if k in input_kinds else v) for k, v in inputs.items()}
        got = _outputs(fn(**moved), output_kinds)
        for name, (kind, ref) in reference.items():
            expect, actual = _apply(kind, ref, rot, shift), got[name][1]
            if output_mask is not None and kind != "invariant":
                expect, actual = expect[output_mask.bool()], actual[output_mask.bool()]
            if not torch.allclose(actual, expect, atol=atol, rtol=rtol):
                raise AssertionError(f"output {name!r} ({kind}) is not equivariant: max abs error "
                                     f"{(actual - expect).abs().max().item():.3e} (trial {trial}, "
                                     f"reflection={reflections and trial % 2 == 1})")


def _outputs(out: Any, kinds: Sequence[Kind] | Mapping[str, Kind]) -> dict[str, tuple[Kind, torch.Tensor]]:
    if isinstance(kinds, Mapping):
        get = (lambda k: out[k]) if isinstance(out, Mapping) else (lambda k: getattr(out, k))
        return {k: (kind, get(k)) for k, kind in kinds.items()}
    seq = out if isinstance(out, (tuple, list)) else (out,)
    if len(seq) != len(kinds):
        raise ValueError(f"fn returned {len(seq)} outputs, {len(kinds)} kinds given")
    return {str(i): (kind, x) for i, (kind, x) in enumerate(zip(kinds, seq, strict=True))}
