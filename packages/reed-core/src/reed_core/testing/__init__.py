"""Test helpers shipped with reed-core (no test-framework dependency): a random-projection fake teacher,
tiny batch factories, ``assert_equivariant`` and ``assert_loss_decreases``."""

from .equivariance import assert_equivariant, random_rotation
from .factories import TinyDenoiser, tiny_pair_batch, tiny_token_batch
from .fake_teacher import RandomProjectionTeacher
from .training import assert_loss_decreases

__all__ = [
    "RandomProjectionTeacher",
    "TinyDenoiser",
    "assert_equivariant",
    "assert_loss_decreases",
    "random_rotation",
    "tiny_pair_batch",
    "tiny_token_batch",
]
