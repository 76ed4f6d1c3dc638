"""Evaluation: run whole episodes with a fixed policy and report return statistics.

Episodes use fixed seeds (``seed, seed + 1, ...``), so two evaluations of the same policy
see the same starting states and their numbers can be compared. Several episodes run side
by side with one batched forward pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .envs import make_env

#: A batch policy: observations ``(batch, *obs_shape)`` -> actions ``(batch,)``, as NumPy arrays.
PolicyFn = Callable[[np.ndarray], np.ndarray]

EVAL_SEED = 1_000_000  # far from training seeds, so evaluation starts are never training starts


@dataclass
class EvalResult:
    """Per-episode returns and lengths, plus their summary."""

    returns: np.ndarray  #: (episodes,) float64 undiscounted episode returns
    lengths: np.ndarray  #: (episodes,) int64 episode lengths in environment steps
    success_threshold: float | None = None
    mean_return: float = field(init=False)
    std_return: float = field(init=False)
    success_rate: float = field(init=False)  #: fraction with return >= threshold (NaN without one)

    def __post_init__(self) -> None:
        self.mean_return = float(np.mean(self.returns))
        self.std_return = float(np.std(self.returns))
        self.success_rate = (float(np.mean(self.returns >= self.success_threshold))
                             if self.success_threshold is not None else float("nan"))

    def metrics(self) -> dict[str, float]:
        """As ``eval/*`` metrics for the logger."""
        return {"eval/mean_return": self.mean_return, "eval/std_return": self.std_return,
                "eval/success_rate": self.success_rate, "eval/mean_length": float(np.mean(self.lengths))}

    def __str__(self) -> str:
        text = f"mean return {self.mean_return:.1f} ± {self.std_return:.1f} over {len(self.returns)} episodes"
        if self.success_threshold is not None:
            text += f", success rate {self.success_rate:.0%} (return ≥ {self.success_threshold:g})"
        return text


def evaluate_policy(policy: PolicyFn, env_id: str, episodes: int = 10, seed: int = EVAL_SEED,
                    success_threshold: float | None = None, max_parallel: int = 10) -> EvalResult:
    """Run ``episodes`` episodes of ``env_id`` (episode i reset with seed ``seed + i``).

    Up to ``max_parallel`` episodes run at once; ``policy`` is called once per step on the
    stacked observations of the episodes still running.

    Raises:
        EnvironmentIdError: ``env_id`` is not registered.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    envs = [make_env(env_id) for _ in range(min(episodes, max_parallel))]
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    slot_episode: list[int | None] = [None] * len(envs)
    obs: list[np.ndarray | None] = [None] * len(envs)
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode < episodes:
            slot_episode[slot] = next_episode
            obs[slot], _ = envs[slot].reset(seed=seed + next_episode)
            next_episode += 1
        else:
            slot_episode[slot] = None

    try:
        for slot in range(len(envs)):
            start(slot)
        while any(e is not None for e in slot_episode):
            active = [s for s, e in enumerate(slot_episode) if e is not None]
            actions = np.asarray(policy(np.stack([obs[s] for s in active])))
            for slot, action in zip(active, actions):
                ep = slot_episode[slot]
                obs[slot], reward, terminated, truncated, _ = envs[slot].step(action.item())
                returns[ep] += float(reward)
                lengths[ep] += 1
                if terminated or truncated:
                    start(slot)
    finally:
        for env in envs:
            env.close()
    return EvalResult(returns, lengths, success_threshold)


def agent_policy(agent: torch.nn.Module, deterministic: bool = True, device: str | torch.device = "cpu") -> PolicyFn:
    """Wrap an actor-critic's :meth:`act` as a NumPy batch policy for :func:`evaluate_policy`."""
    def policy(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32, device=device)
        return agent.act(x, deterministic=deterministic).cpu().numpy()
    return policy


def evaluate(agent: torch.nn.Module, env_id: str, episodes: int = 10, deterministic: bool = True,
             seed: int = EVAL_SEED, success_threshold: float | None = None,
             device: str | torch.device = "cpu") -> EvalResult:
    """Evaluate an actor-critic on ``episodes`` fixed-seed episodes.

    Args:
        agent: a network with ``act(obs, deterministic) -> actions``.
        env_id: Gymnasium id.
        episodes: number of episodes.
        deterministic: take the most likely action (argmax of the logits) instead of sampling.
        seed: episode i starts from ``reset(seed=seed + i)``.
        success_threshold: return counted as a success (LunarLander: 200).
    """
    was_training = agent.training
    agent.eval()
    try:
        return evaluate_policy(agent_policy(agent, deterministic, device), env_id, episodes, seed, success_threshold)
    finally:
        agent.train(was_training)
