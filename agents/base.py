"""Agent: who decides. Every agent speaks ask/tell over a `Space` under a `Budget`; a registry maps names to agents."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeGuard

import numpy as np

from autocomp.errors import ConfigError
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Budget, Space


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """An agent without options of its own."""


def is_number(value: object) -> TypeGuard[float]:
    """A finite int or float, not a bool (for validating agents' options)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: object) -> bool:
    """An int, not a bool (for validating agents' options)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Agent(ABC):
    """Proposes policies and learns from their results.

    ``ask`` gives a proposal in the agent's own terms (what the study records as the trial's
    params; a subclass implements it as `propose`); ``project`` turns it into the policy that is
    evaluated, by default the budget's projection (feasible, using >= 97% of the budget). ``tell``
    is called once per finished candidate with the proposal, in order, also when a run resumes and
    the study's earlier trials are replayed, so an agent's whole state follows from its tells: a
    resumed agent proposes what the uninterrupted one would have. A parallel runner may ask
    several times before telling; random draws are then seeded apart (`draw_key`), so the
    proposals in flight differ.
    """

    Options: ClassVar[type] = NoOptions
    """The dataclass of this agent's own settings (`search.options` in a config)."""
    fills: ClassVar[bool] = True
    """Whether a proposal within the budget is filled up to it; agents comparing costs (NSGA-II, NAS tables) say no."""
    stoppable: ClassVar[bool] = True
    """Whether a candidate may be stopped early by a pruner (successive halving), its score then from a lower rung;
    agents that compare every candidate's score with the others' (the greedy walks) say no: theirs climb every rung."""
    parallel: ClassVar[bool] = True
    """Whether candidates may be evaluated while others are pending (told later, out of order, or asked by another
    process's agent); agents walking one path (uniform, the greedy baselines) say no."""

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        self.space = space
        self.budget = budget
        self.seed = seed
        self.projection = projection
        self.options = options if options is not None else self.Options()
        self.told = 0
        self.asked = 0
        self.in_flight = 0
        """Proposals asked for and neither told nor discarded yet."""

    def ask(self) -> Policy | None:
        """The next proposal, or None when the agent has nothing new to propose."""
        proposal = self.propose()
        self.asked += 1
        if proposal is not None:
            self.in_flight += 1
        return proposal

    @abstractmethod
    def propose(self) -> Policy | None:
        """What `ask` returns; a random draw is seeded from `draw_key` (or `draw_seed`)."""

    @property
    def draw_key(self) -> tuple[int, ...]:
        """What the next random draw is seeded from, beside the agent's seed.

        ``(told,)`` when no proposal is in flight, as in a sequential run, so that a resumed
        agent, told the study's trials again, draws what the uninterrupted one did;
        ``(told, asked)`` while others are in flight, so proposals asked together differ.
        """
        return (self.told,) if self.in_flight == 0 else (self.told, self.asked)

    def draw_seed(self) -> int:
        """`draw_key` as one integer seed (for samplers that take one)."""
        if self.in_flight == 0:
            return self.seed * 1_000_003 + self.told
        return int(np.random.default_rng([self.seed, *self.draw_key]).integers(2**31))

    def project(self, proposal: Policy) -> Policy:
        """The policy evaluated for ``proposal``: the budget's projection of it (a proposal within the budget is
        evaluated as it is when the agent does not ``fill``)."""
        if not self.fills and self.budget.feasible(proposal):
            return proposal
        return self.budget.project(self.space, proposal, self.projection)

    def evaluations_wanted(self) -> int | None:
        """The evaluations this agent's walk needs to reach its result (None: it makes use of any number)."""
        return None

    def is_probe(self, proposal: Policy) -> bool:
        """Whether ``proposal`` is a measurement outside the budget (a sensitivity probe), not a candidate."""
        return False

    def replay(self, proposal: Policy) -> None:  # noqa: B027 (a hook: by default nothing to redo)
        """On resume, before a replayed trial is told: redo what asking for ``proposal`` did (by default nothing).

        The run calls it before the trial's measured cost corrects the budget, as the trial's
        ask came before that correction in the uninterrupted run.
        """

    def tell(self, proposal: Policy, result: EvalResult | None) -> None:
        """Record the result of ``proposal``'s policy (None when its evaluation failed)."""
        self.told += 1
        self.in_flight = max(0, self.in_flight - 1)  # replayed trials are told without an ask

    def discard(self, proposal: Policy) -> None:
        """Forget an asked ``proposal`` that will not be evaluated (a runner drops a repeat of a candidate in flight)."""
        self.in_flight = max(0, self.in_flight - 1)


_REGISTRY: dict[str, type[Agent]] = {}


def register_agent(name: str) -> Callable[[type[Agent]], type[Agent]]:
    def decorate(cls: type[Agent]) -> type[Agent]:
        _REGISTRY[name] = cls
        return cls

    return decorate


def agent_names() -> list[str]:
    return sorted(_REGISTRY)


def agent_class(name: str) -> type[Agent]:
    """The agent registered as ``name``; `ConfigError` naming the registered ones otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown agent {name!r}; allowed: {', '.join(agent_names())}.")
    return _REGISTRY[name]


def agent_options(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The options dataclass of agent ``name`` from a mapping; `ConfigError` for an unknown key or a bad value."""
    cls = agent_class(name)
    allowed = [f.name for f in dataclasses.fields(cls.Options)]
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        raise ConfigError(f"agent {name!r} has no option {unknown[0]!r}; allowed: {', '.join(allowed) or 'none'}.")
    try:
        return cls.Options(**(options or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"agent {name!r}: {error}") from None


def create_agent(
    name: str,
    space: Space,
    budget: Budget,
    seed: int = 0,
    projection: str = "auto",
    options: Mapping[str, Any] | None = None,
) -> Agent:
    """The agent registered as ``name`` over ``space`` under ``budget``, with its ``options``."""
    return agent_class(name)(space, budget, seed=seed, projection=projection, options=agent_options(name, options))
