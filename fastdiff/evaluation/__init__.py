"""Lightning-free evaluation: samplers x budgets x metrics over a score model and a seed set."""
from fastdiff.evaluation.evaluator import Evaluator, RunResult
from fastdiff.evaluation.metric_set import MetricSet
from fastdiff.evaluation.runs import SAMPLER_KEYS, EvalRun, build_runs

__all__ = ["Evaluator", "MetricSet", "RunResult", "EvalRun", "build_runs", "SAMPLER_KEYS"]
