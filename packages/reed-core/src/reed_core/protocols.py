"""The domain seam: what every REED domain implements, written down once.

A domain is one implementation of these protocols plus one ``DomainPreset`` (``reed_core.recipe``):

* **Denoiser** (an ``nn.Module``): ``forward(x_t, t, cond, *, capture=()) -> DenoiserOutput``. ``capture`` names
  the layers whose hidden states come back in ``DenoiserOutput.hiddens`` (token (B,L,D) with a bool mask in
  ``masks``, pair (B,L,K,D), pooled (B,D)); samplers capture nothing and pay nothing. No projector and no loss
  inside. A denoiser trained as the variational hybrid also takes ``latents={name: LatentCondition}``.
* **Process**: ``sample_time``, ``corrupt`` and a per-sample ``loss``; t = 0 clean data, t = 1 pure noise /
  fully masked. It never calls the model. A process whose prediction a teacher can also make (a distribution
  over tokens, say) may define ``distill(prediction, corruption, target) -> (B,)`` for latents matched on the
  prediction (``layer=PREDICTION``).
* **Teacher**: a subclass of ``reed_core.Teacher`` (frozen, eval, no grad; ``name``, ``dim``, ``granularity``;
  ``encode(batch) -> Representation``). Every quirk of the encoder lives inside it.
* **Sampler**: a plain function ``sample(model, process, ..., *, num_steps, generator) -> x0`` that takes an
  explicit ``torch.Generator`` and keeps no state.
* **TrainingData**: the dataset as the trainer sees it: ``collate(items) -> x0`` for training (cropped, padded)
  and, for teachers whose features are cached, ``whole(items)`` / ``lengths`` / ``window(x0)``.
* **Domain**: builds the denoiser and the process, resolves where a latent is captured, and describes a model
  for its checkpoint. ``reed_core.build_trainer(domain, preset, method, ...)`` does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .types import Corruption, DenoiserOutput


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x_t: Any, t: torch.Tensor, cond: Any = None, *, capture: tuple[str, ...] = ()) -> DenoiserOutput: ...


@runtime_checkable
class Process(Protocol):
    """A corruption process. t = 0 is clean data, t = 1 pure noise / fully masked. Never calls the model."""

    def sample_time(self, batch_size: int, *, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def corrupt(self, x0: Any, t: torch.Tensor, *, generator: torch.Generator | None = None) -> Corruption: ...

    def loss(self, prediction: Any, corruption: Corruption) -> torch.Tensor:
        """Per-sample process loss, shape (B,)."""
        ...


class Sampler(Protocol):
    def __call__(self, model: nn.Module, process: Process, *args: Any, num_steps: int,
                 generator: torch.Generator | None) -> Any: ...


@runtime_checkable
class TrainingData(Protocol):
    """Items 0..len-1 of a training set. ``collate`` builds the x0 of a training batch, an optional
    ``condition(items)`` its ``Batch.cond`` (class labels...); ``weights`` (or None) are per-item sampling weights. For cached teacher features: ``whole(items)`` is the x0 of whole, uncropped
    items; ``lengths`` (N,) the tokens per item; ``window(x0)`` returns for each batch row its first token in
    its item (B,) and which positions hold real tokens (B,L) (a crop is a contiguous window of an item); for
    cached pair features an optional ``pairs(x0)``: the token (B,L,K) each pair hidden of the denoiser joins token i
    to, and which pairs are real (B,L,K). An on-disk feature cache also needs ``ids`` (N,): the dataset entries
    the items are. An optional ``augment(x0, rng)`` perturbs a training batch (e.g. coordinate noise) before any
    teacher sees it; ``rng`` is a ``numpy.random.Generator`` seeded by (seed, step, shard): resuming is exact.
    A ``collate(items, rng=None)`` that names an ``rng`` parameter gets the same generator first (e.g. for crop
    windows drawn per step); called without one it must stay deterministic."""

    weights: np.ndarray | None

    def __len__(self) -> int: ...

    def collate(self, items: np.ndarray) -> Any: ...

    def whole(self, items: np.ndarray) -> Any: ...

    @property
    def lengths(self) -> np.ndarray: ...

    def window(self, x0: Any) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Domain(Protocol):
    """``name`` is stored in every checkpoint, so a loader can say what it was given."""

    name: str
    data: TrainingData

    def build_model(self, latent_dims: Mapping[str, int]) -> nn.Module:
        """A fresh denoiser; ``latent_dims`` are the hybrid latents it must accept (empty: none)."""
        ...

    def build_process(self) -> Process: ...

    def capture(self, layer: str | float) -> tuple[str, int]:
        """(capture name, hidden width) of a layer given by name or by relative depth in (0, 1]."""
        ...

    def model_config(self) -> dict[str, Any]:
        """JSON-able description of the model (and process) that ``load_model`` rebuilds it from."""
        ...
