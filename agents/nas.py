"""NAS over MobileNet-style tables: per-stage widths, the width multiplier and the resolution, searched jointly.

Each candidate is an exact table entry: one width per stage (every keep decision of a stage
takes it; a decision spanning stages belongs to the stage of its first layer), one width
multiplier and one resolution from the space's choices, every other decision (bits, rank)
at its largest. Optuna's multivariate TPE draws entries from an in-memory study of the
agent's own. The budget predicts an entry's cost exactly, so a draw is checked before any
evaluation:

* over the budget: told to the study as infeasible through Optuna's per-trial constraints
  (``set_constraint``; never evaluated, so PRUNED), and drawn again;
* within the budget but using less than ``min_usage`` of it, already told or in flight: passed over and
  drawn again. A smaller entry of the same table almost never scores better, and a repeat
  returns a cached score, so neither is worth a trial. Passed-over draws stay RUNNING until
  the proposal is chosen, so TPE's constant liar steers the next draws away from them, and
  are then failed: told as trials, they would swell the count TPE splits at its gamma
  quantile until its "good" group held every evaluated entry, and it stopped ranking them.

An entry that passes is proposed as it is (``project`` leaves it unchanged: entries are
compared as they are, not filled). After ``max_draws`` draws without one, the proposal is the
best feasible draw (a new entry before a repeat, then the one using the most of the budget),
or, when every draw was over the budget, the budget's projection of the draw nearest it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import optuna

from agents.base import is_number, is_whole, register_agent
from agents.optuna_agents import PendingTrials, SamplerAgent, trial_state
from autocomp.errors import ConfigError
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Budget, Space, stages

OVER = "over_budget"


@dataclasses.dataclass(frozen=True)
class NASOptions:
    """``stage_widths``: the widths a stage may take (clipped to the keep axis' range).

    ``min_usage``: the least fraction of the budget a proposed entry uses (0 accepts every feasible
    entry). ``max_draws``: entries drawn per proposal before falling back (see the module's docstring).
    """

    stage_widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    min_usage: float = 0.8
    max_draws: int = 64

    def __post_init__(self) -> None:
        widths = self.stage_widths
        if not isinstance(widths, (list, tuple)) or not widths or not all(is_number(w) and 0 < w <= 1 for w in widths):
            raise ValueError(f"stage_widths {widths!r} is not allowed; need one or more numbers in (0, 1].")
        object.__setattr__(self, "stage_widths", tuple(sorted({float(w) for w in widths})))
        if not is_number(self.min_usage) or not 0 <= self.min_usage <= 1:
            raise ValueError(f"min_usage {self.min_usage!r} is not allowed; need a number in [0, 1].")
        if not is_whole(self.max_draws) or self.max_draws < 1:
            raise ValueError(f"max_draws {self.max_draws!r} is not allowed; need a whole number >= 1.")


@register_agent("nas")
class NASAgent(SamplerAgent):
    """TPE over table entries (per-stage width, width multiplier, resolution); feasible entries are proposed as they are."""

    Options = NASOptions
    fills = False

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        super().__init__(space, budget, seed, projection, options)
        stage_of = stages(budget.graph)
        self._param = {d.name: f"keep/stage{stage_of[d.layers[0]]}" for d in space.of_kind("keep")}
        """The study's parameter that sets each searched decision (its stage's width, or its own choice)."""
        self._distributions: dict[str, optuna.distributions.BaseDistribution] = {}
        """Every parameter's choices (categorical: a stage's widths, a width or resolution decision's choices)."""
        for d in space.of_kind("keep"):
            widths = sorted({d.dim.clip(w) for w in self.options.stage_widths})
            self._distributions.setdefault(self._param[d.name], optuna.distributions.CategoricalDistribution(widths))
        for d in space.of_kind("width", "resolution"):
            self._param[d.name] = d.name
            self._distributions[d.name] = d.dim.distribution()
        if not self._distributions:
            raise ConfigError(
                "the nas agent searches keep, width and resolution decisions; this space has none of them."
            )
        self._study = optuna.create_study(direction="maximize")
        self._pending = PendingTrials(self._study)
        self._told_keys: set[str] = set()

    def propose(self) -> Policy:
        self._study.sampler = optuna.samplers.TPESampler(
            seed=self.draw_seed(), multivariate=True, n_startup_trials=10, constant_liar=True
        )
        over: list[tuple[float, Policy]] = []
        fits: list[tuple[bool, float, Policy]] = []
        passed_over: list[optuna.trial.Trial] = []
        chosen: tuple[Policy, optuna.trial.Trial | None] | None = None
        for _ in range(self.options.max_draws):
            trial = self._study.ask(self._distributions)
            entry = self.architecture(trial.params)
            usage = self.budget.usage(entry)
            if not self.budget.feasible(entry):
                trial.set_constraint(OVER, usage - 1)
                self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                over.append((usage, entry))
                continue
            new = entry.key() not in self._told_keys and entry.key() not in self._pending
            if usage >= self.options.min_usage and new:
                chosen = entry, trial
                break
            fits.append((new, usage, entry))
            passed_over.append(trial)
        for trial in passed_over:  # not results: TPE forgets them once the proposal is chosen
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        entry, chosen_trial = chosen or (self._fallback(fits, over), None)
        self._pending.add(entry.key(), chosen_trial)
        return entry

    def _fallback(self, fits: list[tuple[bool, float, Policy]], over: list[tuple[float, Policy]]) -> Policy:
        """The best draw within the budget (a new entry before a repeat, then the one using the most of the budget);
        when none was, the budget's projection of the draw nearest it."""
        if fits:
            return max(fits, key=lambda fit: fit[:2])[2]
        return self.budget.project(self.space, min(over, key=lambda draw: draw[0])[1], self.projection)

    def tell(self, proposal: Policy, result: EvalResult | None) -> None:
        key = proposal.key()
        trial = self._told_trial(proposal)
        super().tell(proposal, result)
        self._told_keys.add(key)
        state = trial_state(result)
        value = result.accuracy if result is not None and state == optuna.trial.TrialState.COMPLETE else None
        if trial is not None:
            trial.set_constraint(OVER, self.budget.usage(proposal) - 1)
            self._study.tell(trial, value, state=state)
            return
        # a fallback, or a proposal this agent would not make: recorded at its nearest table entry
        choices = self.choices(proposal)
        self._study.add_trial(
            optuna.trial.create_trial(
                params=choices,
                distributions=self._distributions,
                value=value,
                state=state,
                constraints={OVER: self.budget.usage(self.architecture(choices)) - 1},
            )
        )

    def architecture(self, choices: dict[str, float]) -> Policy:
        """The table entry of ``choices`` (the study's parameters): every other decision at its largest."""
        return self.space.to_policy(
            {
                d.name: choices[self._param[d.name]] if d.name in self._param else d.dim.high
                for d in self.space.decisions
            }
        )

    def _choices(self, param: str) -> Sequence[float]:
        """The values the study's parameter ``param`` takes (its distribution is categorical, of numbers)."""
        return cast(
            "Sequence[float]", cast(optuna.distributions.CategoricalDistribution, self._distributions[param]).choices
        )

    def choices(self, policy: Policy) -> dict[str, float]:
        """The study's parameters nearest ``policy``: each stage's width read from its first keep decision."""
        params = self.space.to_params(policy)
        choices: dict[str, float] = {}
        for name, param in self._param.items():
            if param not in choices:
                table = self._choices(param)
                choices[param] = min(table, key=lambda c: (abs(c - params[name]), c))
        return choices
