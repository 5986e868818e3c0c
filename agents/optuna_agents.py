"""Optuna samplers as agents: an in-memory study mirrors the run's trials, one sampler draw per ask."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import optuna

from agents.base import Agent, register_agent
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Budget, Space


class OptunaAgent(Agent):
    """Asks an Optuna sampler; the sampler is re-seeded from (seed, n) so a resumed run proposes the same."""

    def __init__(self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto",
                 options: Any = None) -> None:
        super().__init__(space, budget, seed, projection, options)
        self._study = optuna.create_study(direction="maximize", sampler=self.make_sampler(seed))
        self._pending: dict[str, optuna.trial.Trial] = {}

    @abstractmethod
    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler that draws candidate n, seeded from (agent seed, n)."""

    def ask(self) -> Policy:
        self._study.sampler = self.make_sampler(self.seed * 1_000_003 + self.told)
        for stale in self._pending.values():  # asked but never told (a replay of another proposal): not a result
            self._study.tell(stale, state=optuna.trial.TrialState.FAIL)
        trial = self._study.ask(self.space.distributions())
        policy = self.space.to_policy(trial.params)
        self._pending = {policy.key(): trial}
        return policy

    def tell(self, policy: Policy, result: EvalResult | None) -> None:
        if result is None:
            state, value = optuna.trial.TrialState.FAIL, None
        elif result.stopped_at is not None:  # a partial score is not a result: the sampler sees a pruned trial
            state, value = optuna.trial.TrialState.PRUNED, None
        else:
            state, value = optuna.trial.TrialState.COMPLETE, result.accuracy
        if policy.key() not in self._pending:  # replayed from the run's study: ask again, so the sampler's own
            self.ask()  # records (CMA-ES generations, for one) are what an uninterrupted run wrote
        trial = self._pending.pop(policy.key(), None)
        super().tell(policy, result)
        if trial is None:  # the run's study holds a proposal this agent would not make: a finished trial as it is
            self._study.add_trial(optuna.trial.create_trial(
                params=self.space.to_params(policy), distributions=self.space.distributions(), value=value, state=state))
        else:
            self._study.tell(trial, value, state=state)


@register_agent("tpe")
class TPEAgent(OptunaAgent):
    """Tree-structured Parzen estimator (multivariate), after 10 random start-up trials."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


@register_agent("cmaes")
class CmaEsAgent(OptunaAgent):
    """CMA-ES (Hansen) over the continuous decisions; choices and bits are drawn independently."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)


@register_agent("gp")
class GPAgent(OptunaAgent):
    """Gaussian-process Bayesian optimisation (Optuna's GPSampler, log expected improvement)."""

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
