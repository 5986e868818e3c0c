"""Successive halving over the evaluator's rungs, as an Optuna pruner (asynchronous, as ASHA decides).

A candidate scored at fidelity ``halving`` reports its held-out score at each rung (fine-tune steps so far; 0: after
BatchNorm recalibration). It goes on to the next rung when that score is among the best ``1/reduction`` of the scores
the study's finished trials had at the same rung (the best so far while fewer than ``reduction`` have one), so many
candidates are scored cheaply and few get the long fine-tune. With ``brackets`` > 1, Hyperband-style: each candidate
falls in one bracket (by its decisions' hash, so every process and a resumed run agree), bracket ``b`` first compares
its candidates at rung ``b`` (they all train that far) and compares them only with each other.
"""

from __future__ import annotations

import hashlib
import json

import optuna
from optuna.trial import FrozenTrial, TrialState

_COMPARED = (TrialState.COMPLETE, TrialState.PRUNED)


class HalvingPruner(optuna.pruners.BasePruner):
    """Stops a candidate at a rung (not the last) whose score there is not among the best ``1/reduction`` so far."""

    def __init__(self, rungs: tuple[int, ...], reduction: int = 3, brackets: int = 1) -> None:
        self.rungs = rungs
        self.reduction = reduction
        self.brackets = brackets

    def bracket(self, trial: FrozenTrial) -> int:
        """The bracket ``trial`` falls in: from its params alone (a running copy and the finished trial agree)."""
        if self.brackets == 1:
            return 0
        key = json.dumps(trial.params, sort_keys=True).encode()
        return int(hashlib.sha256(key).hexdigest(), 16) % self.brackets

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs[:-1]:
            return False
        bracket = self.bracket(trial)
        if self.rungs.index(step) < bracket:  # this bracket's candidates all train past this rung
            return False
        scores = [
            other.intermediate_values[step]
            for other in study.get_trials(deepcopy=False, states=_COMPARED)
            if step in other.intermediate_values and self.bracket(other) == bracket
        ]
        score = trial.intermediate_values[step]
        going_on = max(1, (len(scores) + 1) // self.reduction)
        return sum(other > score for other in scores) >= going_on
