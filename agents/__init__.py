"""Who decides: agents proposing policies over a search space, all speaking ask/tell."""

from agents import amc, baselines, greedy, haq, nas, optuna_agents  # noqa: F401  (registers the agents)
from agents.base import (
    Agent,
    agent_class,
    agent_names,
    agent_options,
    create_agent,
    register_agent,
)

__all__ = ["Agent", "agent_class", "agent_names", "agent_options", "create_agent", "register_agent"]
