"""Test helpers shipped with reed-core (no test-framework dependency): a random-projection fake teacher, tiny
batch factories and a tiny denoiser, ``assert_equivariant`` and ``assert_loss_decreases``."""

from .equivariance import assert_equivariant, random_rotation
from .factories import (
           RandomProjectionTeacher,
           TinyDenoiser,
           assert_loss_decreases,
           tiny_pair_batch,
           tiny_token_batch,
)

__all__ = ["RandomProjectionTeacher", "TinyDenoiser", "assert_equivariant", "assert_loss_decreases",
           "random_rotation", "tiny_pair_batch", "tiny_token_batch"]
