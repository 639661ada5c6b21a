"""reed-core: the shared maths of REED (representation-guided diffusion).

Multi-latent variational objective, projector heads, alignment losses, curriculum schedules, the domain protocol
(``protocols``), declarative assembly (``recipe``: a domain preset + a method -> a Trainer), cached teacher
features and a domain-agnostic trainer. Depends on torch, numpy, safetensors and tqdm only.
"""

__all__ = [
    "EMA", "AlignmentSpec", "Batch", "Constant", "ConstantTime", "Corruption", "Cosine", "CosineTime", "Curriculum",
    "CutoffTime", "Delayed", "DenoiserOutput", "Domain", "DomainPreset", "FeatureCache", "FunctionTeacher",
    "LatentCondition", "LatentSpec", "Linear", "LinearInterpolant", "LinearTime", "LossTerms", "METHODS",
    "NonFiniteLossError", "Piecewise", "Process", "Projector", "ProjectorBank", "REEDObjective", "Representation",
    "Schedule", "SigmoidTime", "StepData", "StepSampler", "Teacher", "TerminalTime", "TimeWeight", "TrainConfig",
    "Trainer", "TrainingData", "WarmUp", "alignment_loss", "build_trainer", "euler_sample", "latent_conditions",
    "latest_checkpoint", "load_config", "load_weights", "masked_mean", "masked_pool", "pair_alignment",
    "pooled_alignment", "run_train_config", "save_checkpoint", "token_alignment",
]

from .alignment import (
    alignment_loss,
    masked_mean,
    masked_pool,
    pair_alignment,
    pooled_alignment,
    token_alignment,
)
from .cache import FeatureCache
from .checkpoint import latest_checkpoint, load_config, load_weights, save_checkpoint
from .curriculum import (
    Constant,
    ConstantTime,
    Cosine,
    CosineTime,
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
)
from .data import StepData, StepSampler
from .ema import EMA
from .objective import AlignmentSpec, LatentCondition, REEDObjective, latent_conditions
from .processes import LinearInterpolant, euler_sample
from .projector import Projector, ProjectorBank
from .protocols import Domain, Process, TrainingData
from .recipe import METHODS, Curriculum, DomainPreset, LatentSpec, build_trainer, run_train_config
from .teacher import FunctionTeacher, Teacher
from .train import NonFiniteLossError, TrainConfig, Trainer
from .types import Batch, Corruption, DenoiserOutput, LossTerms, Representation

__version__ = "0.1.0"
