"""Agent: who decides. Every agent speaks ask/tell over a `Space`; a registry maps names to agents."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from autocomp.errors import ConfigError
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Space


class Agent(ABC):
    """Proposes policies and learns from their results.

    ``tell`` is called once per finished candidate, in order, also when a run resumes and
    the study's earlier trials are replayed, so an agent's whole state follows from its
    tells: a resumed agent proposes what the uninterrupted one would have.
    """

    def __init__(self, space: Space, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.told = 0

    @abstractmethod
    def ask(self) -> Policy | None:
        """The next policy to evaluate, or None when the agent has nothing new to propose."""

    def tell(self, policy: Policy, result: EvalResult | None) -> None:
        """Record the result of ``policy`` (None when its evaluation failed)."""
        self.told += 1


_REGISTRY: dict[str, type[Agent]] = {}


def register_agent(name: str) -> Callable[[type[Agent]], type[Agent]]:
    def decorate(cls: type[Agent]) -> type[Agent]:
        _REGISTRY[name] = cls
        return cls

    return decorate


def agent_names() -> list[str]:
    return sorted(_REGISTRY)


def create_agent(name: str, space: Space, seed: int = 0) -> Agent:
    """The agent registered as ``name`` over ``space``."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown agent {name!r}; allowed: {', '.join(agent_names())}.")
    return _REGISTRY[name](space, seed=seed)
