"""Scoring candidates: BN recalibration, proxy fine-tuning with distillation, held-out accuracy, cached."""

from autocomp.evaluate.bn import recalibrate_batchnorm
from autocomp.evaluate.evaluator import (
    EvalResult,
    Evaluator,
    EvaluatorSettings,
    Reporter,
    Scoring,
)
from autocomp.evaluate.fidelity import FIDELITY_LEVELS, Fidelity, ProxyTraining
from autocomp.evaluate.metrics import accuracy, held_out_score
from autocomp.evaluate.rank import kendall_tau
from autocomp.evaluate.timing import Timing

__all__ = [
    "FIDELITY_LEVELS",
    "EvalResult",
    "Evaluator",
    "EvaluatorSettings",
    "Fidelity",
    "ProxyTraining",
    "Reporter",
    "Scoring",
    "Timing",
    "accuracy",
    "held_out_score",
    "kendall_tau",
    "recalibrate_batchnorm",
]
