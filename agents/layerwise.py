"""Layer-by-layer reinforcement learning (AMC, HAQ): a DDPG/TD3 actor decides one decision per step.

stable-baselines3 provides the actor, the critic and the replay buffer; the agent drives
them through ask/tell instead of ``learn()``: an ask is one episode (the actor's action for
each decision, plus truncated-normal exploration that decays per episode, or uniform
random actions during the warm-up), a tell stores the episode's transitions with the final
reward on every step (AMC) and trains. Rewards are stored as they are: AMC's moving-average
baseline, subtracted when a transition is stored, would give equal outcomes different
targets as the average moves (and a constant shift changes no action's rank). Every random
draw is seeded from (seed, episode), so a resumed agent, told the study's trials again,
rebuilds the same replay buffer and networks and asks what the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from agents.base import Agent, is_number, is_whole
from agents.layer_env import REWARDS, Episode, reward_of, to_action
from autocomp.evaluate import EvalResult
from autocomp.imports import require
from autocomp.policy import Policy
from search_spaces import Budget, Space

ALGORITHMS = ("ddpg", "td3")


@dataclasses.dataclass(frozen=True)
class LayerwiseOptions:
    """Settings of the layer-by-layer agents (AMC's defaults, scaled to searches of tens of evaluations)."""

    algorithm: str = "ddpg"
    reward: str = "error"
    warmup: int = 6
    """Episodes of uniform random actions before the actor is trained and used."""
    noise: float = 1.0
    """Initial standard deviation of the truncated-normal exploration, in action units ([-1, 1]; AMC's 0.5 on [0, 1])."""
    noise_decay: float = 0.95
    learning_rate: float = 3e-3
    batch_size: int = 64
    gradient_steps: int = 50
    """Training steps after each episode once the warm-up is over."""
    hidden: tuple[int, ...] = (64, 64)
    """Units of the actor's and the critic's hidden layers (AMC: 300, 300, for states of ~10 features)."""
    tau: float = 0.01
    gamma: float = 0.0
    """Discount. 0: the critic regresses each step's action on the episode's reward (its Monte-Carlo return, as
    every step is rewarded with it), which learns within tens of episodes; AMC's 1 bootstraps through the steps."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {self.algorithm!r} is not known; allowed: {', '.join(ALGORITHMS)}.")
        if self.reward not in REWARDS:
            raise ValueError(f"reward {self.reward!r} is not known; allowed: {', '.join(REWARDS)}.")
        for name in ("warmup", "batch_size", "gradient_steps"):
            least = 0 if name == "warmup" else 1
            if not is_whole(getattr(self, name)) or getattr(self, name) < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {getattr(self, name)!r}.")
        for name, low, high in (
            ("noise", 0, math.inf),
            ("learning_rate", 0, math.inf),
            ("tau", 0, 1),
            ("gamma", 0, 1),
            ("noise_decay", 0, 1),
        ):
            value = getattr(self, name)
            if not is_number(value) or not (low <= value <= high if name == "gamma" else low < value <= high):
                raise ValueError(
                    f"{name} must be a number in {'[' if name == 'gamma' else '('}{low}, {high}], got {value!r}."
                )
        if (
            not isinstance(self.hidden, (list, tuple))
            or not self.hidden
            or not all(is_whole(h) and h >= 1 for h in self.hidden)
        ):
            raise ValueError(f"hidden must be one or more layer sizes >= 1, got {self.hidden!r}.")


@contextlib.contextmanager
def _isolated(*seed: int) -> Iterator[None]:
    """One torch thread, and torch's and numpy's global generators seeded from ``seed``, for a while.

    stable-baselines3 draws from the global generators; the search's other work must not see
    them move. Small networks run faster on one thread than on several.
    """
    state, threads = np.random.get_state(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(np.random.default_rng(list(seed)).integers(2**63)))
        np.random.seed(np.random.default_rng([*seed, 1]).integers(2**32))
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            np.random.set_state(state)


def truncated_normal(
    rng: np.random.Generator, mean: float, sigma: float, low: float = -1.0, high: float = 1.0
) -> float:
    """A draw of N(mean, sigma) conditioned on [low, high] (rejection; the clipped mean after 100 misses)."""
    for _ in range(100):
        value = rng.normal(mean, sigma)
        if low <= value <= high:
            return float(value)
    return float(np.clip(mean, low, high))


class RungOffsets:
    """What a candidate stopped at a rung would likely have scored at the end: its score there plus the mean gap
    between the final score and the score at that rung of the candidates that went to the end.

    Successive halving stops most candidates after BatchNorm recalibration or a few proxy steps, whose scores sit far
    below a finished candidate's (50-80% against 88% on mobilenet_v2 at 30% of its MACs). Told as they are, a reward
    learner would fit the fidelity a candidate reached rather than its policy.
    """

    def __init__(self) -> None:
        self._gaps: dict[int, list[float]] = {}

    def estimate(self, result: EvalResult) -> EvalResult:
        """``result``, a stopped one with its accuracy estimated at the end (as it is before any finished one); a
        finished one's curve is learned from."""
        if result.stopped_at is None:
            for step, score in result.curve:
                self._gaps.setdefault(step, []).append(result.accuracy - score)
            return result
        gaps = self._gaps.get(result.stopped_at)
        return dataclasses.replace(result, accuracy=result.accuracy + statistics.fmean(gaps)) if gaps else result


class LayerwiseAgent(Agent):
    """One episode per ask over the space's decisions, learned with stable-baselines3's DDPG or TD3. A candidate
    stopped at a halving rung is rewarded with its estimated final score (`RungOffsets`)."""

    Options: ClassVar[type] = LayerwiseOptions
    wall: ClassVar[bool] = False
    """Whether each action is clipped behind AMC's action wall during the episode."""

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        super().__init__(space, budget, seed, projection, options)
        feature = "the layer-by-layer agents (amc, haq)"
        require("gymnasium", "rl", feature)
        require("stable_baselines3", "rl", feature)
        from agents.gym_env import CompressionEnv

        self.env = CompressionEnv(
            space, budget, score=lambda policy: None, reward=self.options.reward, wall=self.wall, projection=projection
        )
        self.model = self._make_model()
        self.rung_offsets = RungOffsets()

    def _make_model(self) -> Any:
        from stable_baselines3 import DDPG, TD3
        from stable_baselines3.common.logger import Logger

        algorithm = {"ddpg": DDPG, "td3": TD3}[self.options.algorithm]
        with _isolated(self.seed, 0):
            model = algorithm(
                "MlpPolicy",
                self.env,
                learning_rate=self.options.learning_rate,
                buffer_size=100_000,
                learning_starts=0,
                batch_size=self.options.batch_size,
                tau=self.options.tau,
                gamma=self.options.gamma,
                policy_kwargs={"net_arch": list(self.options.hidden)},
                device="cpu",
                verbose=0,
            )
        model.set_logger(Logger(folder=None, output_formats=[]))
        return model

    def _episode(self) -> Episode:
        return Episode(self.space, self.budget, self.env.features, self.wall)

    @property
    def exploring(self) -> bool:
        """Whether the next episode is a warm-up one (uniform random actions)."""
        return self.told < self.options.warmup

    def propose(self) -> Policy:
        rng = np.random.default_rng([self.seed, *self.draw_key])
        sigma = self.options.noise * self.options.noise_decay ** max(0, self.told - self.options.warmup)
        episode = self._episode()
        with _isolated(self.seed, 2, *self.draw_key):
            while not episode.done:
                if self.exploring:
                    action = rng.uniform(-1.0, 1.0)
                else:
                    mean = float(self.model.predict(episode.observation(), deterministic=True)[0][0])
                    action = truncated_normal(rng, mean, sigma)
                episode.act(action)
        return episode.policy()

    def tell(self, proposal: Policy, result: EvalResult | None) -> None:
        estimated = None if result is None or result.failed else self.rung_offsets.estimate(result)
        self._store(proposal, reward_of(estimated, self.options.reward, self.env.largest_macs))
        super().tell(proposal, result)
        if not self.exploring:
            with _isolated(self.seed, 1, self.told):
                self.model.train(gradient_steps=self.options.gradient_steps, batch_size=self.options.batch_size)

    def _store(self, proposal: Policy, reward: float) -> None:
        """The episode that took ``proposal``'s values, every step rewarded with the episode's reward (AMC)."""
        values = self.space.to_params(proposal)
        episode = self._episode()
        while not episode.done:
            decision, before = episode.decision, episode.observation()
            episode.take(values[decision.name])
            done = episode.done
            self.model.replay_buffer.add(
                before[None],
                episode.observation()[None],
                np.array([[to_action(decision, values[decision.name])]], dtype=np.float32),
                np.array([reward]),
                np.array([done]),
                [{}],
            )
