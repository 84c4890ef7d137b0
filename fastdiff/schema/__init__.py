"""The one schema layer: typed sections, registry-backed component options, evaluation blocks, sample.py
arguments and the checks that run before any work. ``fastdiff.config`` loads/merges files and overrides and
validates them here; sample.py, the evaluation callback, the Python API and the samplers use the same checker."""
from .components import build_process, constructor_params, registry_of, validate_options, validate_registry_section
from .evaluation import EVAL_KEYS, SAMPLER_KEYS, EvalSamplerConfig, EvaluationConfig, validate_evaluation
from .sections import (DataLoaderConfig, EMAConfig, FIDConfig, FinalSamplesConfig, ModelConfig, OptimConfig,
                       SampleConfig, SampleTrainerConfig, TrainerConfig, check_devices)
from .types import ConfigError, check_dataclass, check_range, check_value, opt, parse_dataclass

__all__ = ["ConfigError", "check_value", "check_range", "check_dataclass", "parse_dataclass", "opt",
           "OptimConfig", "EMAConfig", "TrainerConfig", "ModelConfig", "FinalSamplesConfig", "DataLoaderConfig",
           "SampleConfig", "SampleTrainerConfig", "FIDConfig", "EvaluationConfig", "EvalSamplerConfig", "EVAL_KEYS",
           "SAMPLER_KEYS", "validate_evaluation", "validate_options", "validate_registry_section", "registry_of",
           "constructor_params", "build_process", "check_devices"]
