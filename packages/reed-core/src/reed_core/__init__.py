"""reed-core: the shared maths of REED (representation-guided diffusion).

Multi-latent variational objective, projector heads, alignment losses, curriculum schedules and a
domain-agnostic trainer. Depends on torch, numpy, safetensors and tqdm only.
"""

from .alignment import (
    alignment_loss,
    masked_mean,
    masked_pool,
    pair_alignment,
    pooled_alignment,
    token_alignment,
)
from .checkpoint import latest_checkpoint, load_config, load_weights, save_checkpoint
from .curriculum import (
    Constant,
    ConstantTime,
    Cosine,
    CosineTime,
    CurriculumPreset,
    CutoffTime,
    Delayed,
    Linear,
    LinearTime,
    Piecewise,
    Schedule,
    SigmoidTime,
    TerminalTime,
    TimeWeight,
    WarmUp,
    reed_curriculum,
)
from .data import StepData, StepSampler
from .ema import EMA
from .objective import AlignmentSpec, LatentCondition, REEDObjective, latent_conditions
from .processes import LinearInterpolant, euler_sample
from .projector import Projector, ProjectorBank
from .teacher import FunctionTeacher, Teacher
from .train import NonFiniteLossError, TrainConfig, Trainer
from .types import Batch, Corruption, DenoiserOutput, LossTerms, Representation

__version__ = "0.1.0"

__all__ = [
    "EMA", "AlignmentSpec", "Batch", "Constant", "ConstantTime", "Corruption", "Cosine", "CosineTime",
    "CurriculumPreset", "CutoffTime", "Delayed", "DenoiserOutput", "FunctionTeacher", "LatentCondition", "Linear",
    "LinearInterpolant", "LinearTime", "LossTerms", "NonFiniteLossError", "Piecewise", "Projector", "ProjectorBank",
    "REEDObjective", "Representation", "Schedule", "SigmoidTime", "StepData", "StepSampler", "Teacher",
    "TerminalTime", "TimeWeight", "TrainConfig", "Trainer", "WarmUp", "alignment_loss", "euler_sample",
    "latent_conditions", "latest_checkpoint", "load_config", "load_weights", "masked_mean", "masked_pool",
    "pair_alignment", "pooled_alignment", "reed_curriculum", "save_checkpoint", "token_alignment",
]
