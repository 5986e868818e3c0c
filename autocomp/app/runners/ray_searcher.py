"""The Ray runner's driver side: `AgentSearcher`, a Tune searcher around the run's agent, which records every finished
trial in the study and tells the agent (the whole design: `ray_runner`); `EarlyStopping`, ASHA remembering the trials it
stopped; `StopOnBug`, which stops the search at a worker's programming error; the JSON a worker reports an evaluation or
a programming error in."""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from autocomp.app.runners.context import Setup, learn
from autocomp.app.runners.study import finished_trial, finished_trials
from autocomp.cost import Cost
from autocomp.errors import PROGRAMMING_ERRORS
from autocomp.evaluate import EvalResult, Evaluator
from autocomp.policy import Policy

ASHA_REDUCTION = 2
"""ASHA keeps the better half at each rung, as the local median pruner does."""


@dataclass
class _InFlight:
    """A candidate handed to Tune, and what its trial reported so far."""

    proposal: Policy
    policy: Policy
    key: str
    probe: bool
    beside: int
    """Candidates in flight when this one was handed out (recorded as the trial's ``ray_beside``)."""
    started: float = field(default_factory=time.perf_counter)
    curve: dict[int, float] = field(default_factory=dict)
    cost: str | None = None
    node: str | None = None
    device: str | None = None
    """Where the worker computed, and the GPU ids Ray assigned it (JSON)."""
    gpus: str | None = None

    def note(self, result: dict[str, Any]) -> None:
        """Take in what a trial reported: an intermediate score (a retried trial starts its curve again), the node and
        device."""
        self.node = result.get("node", self.node)
        self.device, self.gpus = result.get("device", self.device), result.get("gpus", self.gpus)
        if "step" not in result:
            return
        if self.curve and result["step"] <= max(self.curve):
            self.curve.clear()
        self.curve[result["step"]] = result["score"]
        self.cost = result.get("cost")


REPEATS_BEFORE_WAITING = 3
"""Proposals in a row repeating a candidate in flight after which the searcher waits for a result to come in."""


class AgentSearcher(Searcher):
    """Tune's searcher over the run's agent; records every finished trial in the study and tells the agent."""

    def __init__(
        self,
        setup: Setup,
        evaluator: Evaluator,
        study: optuna.Study,
        trials: int,
        experiment: Path,
        stopped_early: Callable[[str], bool],
        on_record: Callable[[], None],
    ) -> None:
        super().__init__()
        self.setup, self.evaluator, self.study, self.trials = setup, evaluator, study, trials
        self.experiment = experiment
        self.stopped_early = stopped_early
        self.on_record = on_record
        self.recorded = len(finished_trials(study))
        self.in_flight: dict[str, _InFlight] = {}
        self.exhausted = False
        self.waiting = False

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher with the experiment; this one is rebuilt from the study instead."""
        return {}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study is the memory."""

    @property
    def finished(self) -> bool:
        """Whether the study holds every trial of the budget (or the agent has nothing more) and none is in flight."""
        return not self.in_flight and (self.exhausted or self.recorded >= self.trials)

    # ray annotates suggest as returning dict | None, though Searcher.FINISHED (a str) is its documented last answer
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        """The next candidate to evaluate, FINISHED when the budget is handed out, None to wait for a result."""
        repeats = 0
        while not self.waiting:
            if self.exhausted or self.recorded + len(self.in_flight) >= self.trials:
                return Searcher.FINISHED
            proposal = self.setup.agent.ask()
            if proposal is None:
                self.exhausted = True
                continue
            policy = self.setup.agent.project(proposal)
            candidate = _InFlight(
                proposal,
                policy,
                self.evaluator.score_key(policy),
                self.setup.agent.is_probe(proposal),
                beside=len(self.in_flight),
            )
            if candidate.key in self.evaluator.cache:
                self._record(candidate, self.evaluator.score(policy))
            elif any(other.key == candidate.key for other in self.in_flight.values()):
                self.setup.agent.discard(proposal)
                repeats += 1
                self.waiting = repeats >= REPEATS_BEFORE_WAITING
            else:
                self.in_flight[trial_id] = candidate
                return {"policy": json.dumps(policy.to_dict())}
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep a trial's intermediate scores, its node and cost."""
        if trial_id in self.in_flight:
            self.in_flight[trial_id].note(result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Record a finished trial; one ended by an interruption is lost, as a local candidate in flight would be."""
        candidate = self.in_flight.pop(trial_id, None)
        if candidate is None:
            return
        self.waiting = False
        outcome = self._outcome(trial_id, candidate, result, error)
        if outcome is None:  # interrupted: never told, so the agent forgets it was asked
            self.setup.agent.discard(candidate.proposal)
        else:
            self.evaluator.remember(candidate.key, outcome)
            self._record(candidate, outcome, trial_id)

    def _outcome(
        self, trial_id: str, candidate: _InFlight, result: dict[str, Any] | None, error: bool
    ) -> EvalResult | None:
        """What a trial's end means: its reported result, a FAIL, a PRUNED trial, or nothing (interrupted)."""
        if error:
            return EvalResult(
                math.nan,
                None,
                time.perf_counter() - candidate.started,
                retry=True,
                error=_failure(self.experiment, trial_id),
                curve=tuple(sorted(candidate.curve.items())),
            )
        if result is None or not ("evaluation" in result or self.stopped_early(trial_id)):
            return None
        candidate.note(result)  # a stopping score reaches the searcher only here
        if "evaluation" in result:
            return decode_result(result["evaluation"])
        curve = tuple(sorted(candidate.curve.items()))
        if candidate.cost is None:  # an ASHA run's worker reports the cost with every score
            raise ValueError(f"trial {trial_id} was stopped early without reporting its candidate's cost.")
        return EvalResult(
            curve[-1][1],
            Cost.from_dict(json.loads(candidate.cost)),
            result["time_total_s"],
            curve=curve,
            stopped_at=curve[-1][0],
        )

    def _record(self, candidate: _InFlight, result: EvalResult, trial_id: str | None = None) -> None:
        """Add the candidate's trial to the study and tell the agent (and the budget) what it learned."""
        trial = finished_trial(
            self.setup.space,
            candidate.proposal,
            candidate.policy,
            self.setup.budget,
            candidate.key,
            result,
            candidate.probe,
        )
        if trial_id is not None:
            trial.set_user_attr("ray_trial", trial_id)
            trial.set_user_attr("ray_beside", candidate.beside)
            for key, value in (
                ("ray_node", candidate.node),
                ("ray_device", candidate.device),
                ("ray_gpus", candidate.gpus),
            ):
                if value is not None:
                    trial.set_user_attr(key, value)
        self.study.add_trial(trial)
        learn(self.setup, candidate.proposal, candidate.policy, result)
        self.recorded += 1
        self.on_record()


class EarlyStopping(ASHAScheduler):
    """ASHA on the candidates' intermediate scores, remembering which trials it stopped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return action


class StopOnBug(Stopper):
    """Stops every trial once one reports a programming error (``bug``: `encode_bug`), kept for the driver to raise."""

    def __init__(self) -> None:
        self.bug: Exception | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if "bug" in result and self.bug is None:
            self.bug = decode_bug(result["bug"])
        return "bug" in result

    def stop_all(self) -> bool:
        return self.bug is not None


class WorkerTraceback(Exception):
    """Where a Ray worker raised a programming error: its traceback, the cause the driver shows for it."""


def _failure(experiment: Path, trial_id: str) -> str:
    """Why Tune gave a trial up: the first sentence of its error file's last line, when there is one."""
    lines = []
    error_file = experiment / trial_id / "error.txt"
    if error_file.exists():
        lines = [line.strip() for line in error_file.read_text(errors="replace").splitlines() if line.strip()]
    reason = f": {lines[-1].split('. ')[0]}" if lines else ""
    return f"RayTrialError: Tune gave trial {trial_id} up after its retries{reason} (see {error_file.parent})"


def encode_result(result: EvalResult) -> str:
    """An evaluation as the JSON a worker reports (`EvalResult.to_dict`: every field, its timing too)."""
    return json.dumps(result.to_dict())


def decode_result(text: str) -> EvalResult:
    """The evaluation `encode_result` wrote."""
    return EvalResult.from_dict(json.loads(text))


def encode_bug(error: Exception, node: str) -> str:
    """A programming error raised on ``node`` as the JSON a worker reports: its `PROGRAMMING_ERRORS` class, its message
    and its traceback."""
    kind = next(kind for kind in PROGRAMMING_ERRORS if isinstance(error, kind))
    where = f"raised on the Ray worker of node {node}:\n{''.join(traceback.format_exception(error))}"
    return json.dumps({"kind": kind.__name__, "message": str(error), "traceback": where})


def decode_bug(text: str) -> Exception:
    """The error `encode_bug` wrote, as its `PROGRAMMING_ERRORS` class (the traceback names the exact one), caused by
    the worker's traceback."""
    bug = json.loads(text)
    error = {kind.__name__: kind for kind in PROGRAMMING_ERRORS}[bug["kind"]](bug["message"])
    error.__cause__ = WorkerTraceback(bug["traceback"])
    return error
