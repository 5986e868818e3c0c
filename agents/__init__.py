"""Who decides: agents proposing policies over a search space, all speaking ask/tell."""

from agents import baselines, optuna_agents  # noqa: F401  (registers the agents)
from agents import amc, haq  # noqa: F401
from agents import nas  # noqa: F401
from agents import greedy  # noqa: F401
from agents.base import Agent, agent_class, agent_names, agent_options, create_agent, register_agent

__all__ = ["Agent", "agent_class", "agent_names", "agent_options", "create_agent", "register_agent"]
