"""reed-core: the shared maths of REED (representation-guided diffusion).

Multi-latent variational objective, projector heads, alignment losses, curriculum schedules, the domain protocol
(``protocols``), declarative assembly (``recipe``: a domain preset + a method -> a Trainer), cached teacher
features and a domain-agnostic trainer. Depends on torch, numpy, safetensors and tqdm only.

Every public name below is importable from ``reed_core``; its module is imported on first use.
"""

_EXPORTS = {
    "allocator": "tune_malloc",
    "alignment": "alignment_loss masked_mean masked_pool pair_alignment pooled_alignment token_alignment",
    "cache": "FeatureCache cache_features",
    "checkpoint": "latest_checkpoint load_config load_weights save_checkpoint save_weights",
    "curriculum": "Constant ConstantTime Cosine CosineTime CutoffTime Delayed Linear LinearTime Piecewise Schedule "
                  "SigmoidTime TerminalTime TimeWeight WarmUp",
    "data": "StepData StepSampler",
    "ema": "EMA",
    "objective": "PREDICTION AlignmentSpec LatentCondition REEDObjective condition_features latent_conditions "
                 "project_hidden",
    "processes": "Interpolant LinearInterpolant euler_sample",
    "projector": "Projector ProjectorBank",
    "protocols": "Domain Process TrainingData",
    "recipe": "METHODS Curriculum DomainPreset LatentSpec build_trainer run_train_config",
    "teacher": "FunctionTeacher Teacher",
    "train": "NonFiniteLossError TrainConfig Trainer Validation",
    "types": "Batch Corruption DenoiserOutput LossTerms Representation",
}
_MODULE = {name: module for module, names in _EXPORTS.items() for name in names.split()}
__all__ = sorted(_MODULE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _MODULE:
        raise AttributeError(f"module 'reed_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_MODULE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
