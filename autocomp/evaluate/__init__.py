"""Scoring candidates: BN recalibration and held-out accuracy (proxy fine-tuning comes next)."""

from autocomp.evaluate.bn import recalibrate_batchnorm
from autocomp.evaluate.evaluator import EvalResult, Evaluator, EvaluatorSettings
from autocomp.evaluate.metrics import accuracy

__all__ = ["EvalResult", "Evaluator", "EvaluatorSettings", "accuracy", "recalibrate_batchnorm"]
