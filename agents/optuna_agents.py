"""Optuna samplers as agents: an in-memory study mirrors the run's trials, one sampler draw per ask."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from agents.base import Agent, is_number, is_whole, register_agent
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Budget, Space
from search_spaces.pareto import pareto_front


def trial_state(result: EvalResult | None) -> TrialState:
    """How a sampler sees a result: FAIL when it failed, PRUNED when stopped early (a partial score), else COMPLETE."""
    if result is None:
        return TrialState.FAIL
    return TrialState.PRUNED if result.stopped_at is not None else TrialState.COMPLETE


class PendingTrials:
    """An agent's own study's trials of the proposals in flight, by proposal key. A repeat of a proposal in flight
    gets no trial of its own (its draw is failed at once): the first one's trial learns the result."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._trials: dict[str, optuna.trial.Trial | None] = {}
        self._repeats: Counter[str] = Counter()

    def __contains__(self, key: str) -> bool:
        return key in self._trials

    def add(self, key: str, trial: optuna.trial.Trial | None) -> None:
        """``trial`` drew the proposal ``key`` (None: the proposal was made without one)."""
        if key not in self._trials:
            self._trials[key] = trial
            return
        self._repeats[key] += 1
        if trial is not None:
            self.study.tell(trial, state=TrialState.FAIL)

    def take(self, key: str) -> optuna.trial.Trial | None:
        """The trial a tell of ``key`` finishes (None when ``key`` was not drawn by one)."""
        return self._trials.pop(key, None)

    def discard(self, key: str) -> None:
        """A proposal ``key`` that will not be told: a repeat is forgotten, else its trial is failed."""
        if self._repeats[key]:
            self._repeats[key] -= 1
            return
        trial = self._trials.pop(key, None)
        if trial is not None:
            self.study.tell(trial, state=TrialState.FAIL)


class SamplerAgent(Agent):
    """An agent whose proposals are drawn as trials of an Optuna study of its own, pending until told.

    On resume, a replayed trial that is not pending is drawn again (`replay`), so the sampler's
    own records (CMA-ES generations, for one) are what an uninterrupted run wrote; a different
    draw is no result and is discarded.
    """

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        super().__init__(space, budget, seed, projection, options)
        self._pending: PendingTrials
        self._replayed: str | None = None
        """The key last replayed: its tell does not draw again."""

    def replay(self, proposal: Policy) -> None:
        key = proposal.key()
        if key not in self._pending and key != self._replayed:
            drawn = self.ask()
            if drawn is not None and drawn.key() != key:
                self.discard(drawn)
        self._replayed = key

    def discard(self, proposal: Policy) -> None:
        super().discard(proposal)
        self._pending.discard(proposal.key())

    def _told_trial(self, proposal: Policy) -> optuna.trial.Trial | None:
        """The pending trial a tell of ``proposal`` finishes (after its replay; None: not drawn by this agent)."""
        self.replay(proposal)
        self._replayed = None
        return self._pending.take(proposal.key())


class OptunaAgent(SamplerAgent):
    """Asks an Optuna sampler; the sampler is re-seeded from `draw_seed` so a resumed run proposes the same.

    A subclass makes the sampler (`make_sampler`) and may change what it draws from
    (`distributions`) and what it learns of a finished candidate (`objectives`, `learned_params`).
    """

    directions: ClassVar[tuple[Literal["minimize", "maximize"], ...]] = ("maximize",)
    """The directions of the values `objectives` gives the sampler."""

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        super().__init__(space, budget, seed, projection, options)
        self._storage = optuna.storages.InMemoryStorage()
        self._study = optuna.create_study(
            storage=self._storage, directions=list(self.directions), sampler=optuna.samplers.RandomSampler(seed)
        )  # each ask sets its own
        self._pending = PendingTrials(self._study)

    @abstractmethod
    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler that draws candidate n, seeded from (agent seed, n)."""

    def distributions(self) -> dict[str, BaseDistribution]:
        """What the sampler draws each decision from: by default the space's own range or choices."""
        return self.space.distributions()

    def objectives(self, proposal: Policy, result: EvalResult) -> list[float]:
        """The values the sampler learns for a finished candidate: by default its accuracy."""
        return [result.accuracy]

    def learned_params(self, sample: Mapping[str, Any], proposal: Policy) -> Mapping[str, Any]:
        """The params the sampler learns it drew for ``proposal``: by default what it did draw (``sample``)."""
        return sample

    def propose(self) -> Policy:
        self._study.sampler = self.make_sampler(self.draw_seed())
        trial = self._study.ask(self.distributions())
        policy = self.space.to_policy(trial.params)
        self._pending.add(policy.key(), trial)
        return policy

    def tell(self, proposal: Policy, result: EvalResult | None) -> None:
        state = trial_state(result)
        values = self.objectives(proposal, result) if result is not None and state == TrialState.COMPLETE else None
        curve = self._partial_scores(result) if state == TrialState.PRUNED else {}
        trial = self._told_trial(proposal)
        super().tell(proposal, result)
        if trial is None:  # the run's study holds a proposal this agent would not make: a finished trial as it is
            params = self.learned_params(self.space.to_params(proposal), proposal)
            number = len(self._study.get_trials(deepcopy=False))
            self._study.add_trial(
                optuna.trial.create_trial(
                    params=dict(params),
                    distributions=self.distributions(),
                    values=values,
                    state=state,
                    intermediate_values=curve,
                )
            )
        else:
            number = trial.number
            learned = self.learned_params(trial.params, proposal)
            if learned != trial.params:
                self._set_params(trial, learned)
            for step, score in curve.items():
                trial.report(score, step)
            self._study.tell(trial, values, state=state)
        self.learned(number, proposal, result)

    def _partial_scores(self, result: EvalResult | None) -> dict[int, float]:
        """A stopped candidate's intermediate scores, which the sampler ranks it by (TPE: below every complete one,
        by the furthest step reached, then the score there); none for a study of several objectives."""
        if result is None or len(self.directions) > 1:
            return {}
        return dict(result.curve)

    def learned(self, number: int, proposal: Policy, result: EvalResult | None) -> None:
        """After the tell of ``proposal``, recorded as trial ``number`` of the agent's own study (by default nothing)."""

    def _set_params(self, trial: optuna.trial.Trial, params: Mapping[str, Any]) -> None:
        """Record ``params`` as the running ``trial``'s, in place of what the sampler drew."""
        distributions = self.distributions()
        study_id = self._storage.get_study_id_from_name(self._study.study_name)
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        for name, value in params.items():
            self._storage.set_trial_param(
                trial_id, name, distributions[name].to_internal_repr(value), distributions[name]
            )


@register_agent("tpe")
class TPEAgent(OptunaAgent):
    """Tree-structured Parzen estimator (multivariate), after 10 random start-up trials; candidates in flight count as
    bad ones (constant liar), so proposals asked together spread out."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, constant_liar=True)


@dataclass(frozen=True)
class CmaEsOptions:
    margin: float = 1.0
    """How far beyond each decision's range the sampler draws, in ranges; a draw outside is clipped onto the bound."""
    startup: int = 10
    """Random trials before CMA-ES starts from the best tenth of them (at least 10, so that tenth is not empty)."""
    population: int | None = None
    """Candidates per CMA-ES generation; None: Hansen's default, 4 + 3 ln(number of decisions)."""

    def __post_init__(self) -> None:
        _check_margin(self.margin)
        if not is_whole(self.startup) or self.startup < 10:
            raise ValueError(f"startup {self.startup!r} is not allowed; need a whole number >= 10.")
        if self.population is not None and (not is_whole(self.population) or self.population < 2):
            raise ValueError(f"population {self.population!r} is not allowed; need None or a whole number >= 2.")


@register_agent("cmaes")
class CmaEsAgent(OptunaAgent):
    """CMA-ES (Hansen) over every decision as a number, learning from the policies it has evaluated.

    The projection makes whole rays of proposals one policy, and compression optima often lie on
    a decision's bound (a layer left whole, one pruned as far as allowed). So CMA-ES draws in a box
    wider than the space by ``margin`` (a draw outside is clipped onto the bound, which thus has a
    fair chance), and is told the evaluated policy, on the budget and within the bounds, as the
    point it drew (Lamarckian repair): its mean moves along the budget's surface. Until its first
    generation is complete it is warm-started (WS-CMA-ES, Nomura et al., 2021) from the best tenth
    of the trials finished so far, the random start-up trials first.
    """

    Options = CmaEsOptions

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        finished = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        with _experimental_allowed():
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=self.options.startup,
                popsize=self.options.population,
                source_trials=finished[: self.options.startup] if len(finished) >= self.options.startup else None,
                warn_independent_sampling=False,
            )

    def distributions(self) -> dict[str, BaseDistribution]:
        return _widened(self.space, self.options.margin)

    def learned_params(self, sample: Mapping[str, Any], proposal: Policy) -> Mapping[str, Any]:
        return self.space.to_params(self.project(proposal))


@register_agent("gp")
class GPAgent(OptunaAgent):
    """Gaussian-process Bayesian optimisation (Optuna's GPSampler, log expected improvement)."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)


@dataclass(frozen=True)
class NSGA2Options:
    population: int = 8
    """Candidates per NSGA-II generation; the first generation is random."""
    margin: float = 0.5
    """How far beyond each decision's range the sampler draws, in ranges; a draw outside is clipped onto the bound."""

    def __post_init__(self) -> None:
        if not is_whole(self.population) or self.population < 2:
            raise ValueError(f"population {self.population!r} is not allowed; need a whole number >= 2.")
        _check_margin(self.margin)


@dataclass(frozen=True)
class FrontPoint:
    """A finished candidate that no other is at least as good as on accuracy and on budget use, and better on one."""

    proposal: Policy
    policy: Policy
    """The policy evaluated for ``proposal``."""
    accuracy: float
    usage: float
    """The largest fraction of a limit its measured cost uses (`Budget.measured_usage`)."""


@register_agent("nsga2")
class NSGA2Agent(OptunaAgent):
    """NSGA-II (Deb et al., 2002) on two objectives, accuracy up and measured budget use down.

    A proposal within the budget is evaluated as it is; one over it is projected onto it. So
    candidates spread along the cost axis, and `pareto_front` gives the trade-off the search saw.
    Children are blends of two parents (BLX-alpha, which also reaches beyond them), drawn in a
    box wider than the space by ``margin`` as CMA-ES's are.
    """

    Options = NSGA2Options
    directions = ("maximize", "minimize")
    fills = False

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        super().__init__(space, budget, seed, projection, options)
        self._finished: dict[int, FrontPoint] = {}
        """Every complete candidate, by its trial number in the agent's own study."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        with _experimental_allowed():
            return optuna.samplers.NSGAIISampler(
                population_size=self.options.population, seed=seed, crossover=optuna.samplers.nsgaii.BLXAlphaCrossover()
            )

    def distributions(self) -> dict[str, BaseDistribution]:
        return _widened(self.space, self.options.margin)

    def objectives(self, proposal: Policy, result: EvalResult) -> list[float]:
        return [result.accuracy, self.budget.measured_usage(result.measured_cost)]

    def learned(self, number: int, proposal: Policy, result: EvalResult | None) -> None:
        if result is not None and result.stopped_at is None:
            accuracy, usage = self.objectives(proposal, result)
            self._finished[number] = FrontPoint(proposal, self.project(proposal), accuracy, usage)

    def pareto_front(self) -> list[FrontPoint]:
        """The non-dominated finished candidates, cheapest first."""
        return pareto_front(self._finished.values(), lambda point: point.accuracy, lambda point: point.usage)


def _widened(space: Space, margin: float) -> dict[str, BaseDistribution]:
    """Every decision as a number from its range widened by ``margin`` ranges on each side.

    `Space.to_policy` clips a draw outside onto the bound (and rounds bits and choices), so a
    bound, where compression optima often lie (a layer left whole, one pruned as far as
    allowed), is drawn with a fair chance instead of almost never.
    """
    return {
        d.name: FloatDistribution(
            d.dim.low - margin * (d.dim.high - d.dim.low), d.dim.high + margin * (d.dim.high - d.dim.low)
        )
        for d in space.decisions
    }


def _check_margin(margin: object) -> None:
    if not is_number(margin) or margin < 0:
        raise ValueError(f"margin {margin!r} is not allowed; need a finite number >= 0.")


@contextmanager
def _experimental_allowed() -> Iterator[None]:
    """Optuna features marked experimental, used knowingly (and tested here): no warning at every ask."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
