"""Evaluation: run whole episodes with a fixed policy and report return statistics.

Episodes use fixed seeds (``seed, seed + 1, ...``), so two evaluations of the same policy
see the same starting states and their numbers can be compared. Several episodes run side
by side with one batched forward pass per step.

A recurrent agent's policy (:class:`RecurrentPolicy`) carries one LSTM state per episode slot
through the episode and starts each new episode from a blank memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .envs import make_env
from .networks import weight_snapshot

#: A batch policy: observations ``(batch, *obs_shape)`` -> actions ``(batch,)`` (discrete) or
#: ``(batch, act_dim)`` (continuous), as NumPy arrays.
PolicyFn = Callable[[np.ndarray], np.ndarray]

EVAL_SEED = 1_000_000  # far from training seeds, so evaluation starts are never training starts


@dataclass
class EvalResult:
    """Per-episode returns and lengths, plus their summary."""

    returns: np.ndarray  #: (episodes,) float64 undiscounted episode returns
    lengths: np.ndarray  #: (episodes,) int64 episode lengths in environment steps
    success_threshold: float | None = None
    #: per-episode statistics the environment reports at an episode's end (Doom's
    #: ``info["episode_stats"]``: kills, max_progress, native_return, success, ...), each (episodes,)
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    mean_return: float = field(init=False)
    std_return: float = field(init=False)
    #: fraction with return >= threshold; without a threshold, the environment's own ``success``
    #: flag where it reports one (Doom: monster killed / vest reached), else NaN
    success_rate: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean_return = float(np.mean(self.returns))
        self.std_return = float(np.std(self.returns))
        if self.success_threshold is not None:
            self.success_rate = float(np.mean(self.returns >= self.success_threshold))
        elif "success" in self.stats:
            self.success_rate = float(np.mean(self.stats["success"]))
        else:
            self.success_rate = float("nan")

    def metrics(self) -> dict[str, float]:
        """As ``eval/*`` metrics for the logger (plus ``eval/<stat>`` means of the environment's statistics)."""
        out = {"eval/mean_return": self.mean_return, "eval/std_return": self.std_return,
               "eval/success_rate": self.success_rate, "eval/mean_length": float(np.mean(self.lengths))}
        out.update({f"eval/{k}": float(np.mean(v)) for k, v in self.stats.items()})
        return out

    def __str__(self) -> str:
        text = f"mean return {self.mean_return:.1f} ± {self.std_return:.1f} over {len(self.returns)} episodes"
        if self.success_threshold is not None:
            text += f", success rate {self.success_rate:.0%} (return ≥ {self.success_threshold:g})"
        elif "success" in self.stats:
            text += f", success rate {self.success_rate:.0%}"
        for key in ("kills", "max_progress"):
            if key in self.stats:
                text += f", {key.replace('_', ' ')} {np.mean(self.stats[key]):.1f}/episode"
        return text


class RecurrentPolicy:
    """A recurrent agent as a batch policy: one LSTM state per slot, carried from step to step.

    Call it like a :data:`PolicyFn`, ``policy(obs) -> actions``, with observations of slots
    ``0..batch-1``, or with ``slots=`` naming which slots the rows are (:func:`evaluate_policy`
    passes the slots still running). :meth:`reset` marks a slot's next observation as the start
    of an episode; its memory is zeroed at that step by the agent's done mask. A fresh policy
    starts every slot that way, so one policy per recorded episode needs no reset.

    Args:
        agent: a :class:`~ppo_course.networks.RecurrentActorCritic`.
        deterministic: argmax actions instead of samples.
        device: where the forward passes run.
        num_slots: initial number of slots (grows on demand).
    """

    def __init__(self, agent: torch.nn.Module, deterministic: bool = True, device: str | torch.device = "cpu",
                 num_slots: int = 1):
        self.agent, self.deterministic, self.device = agent, deterministic, torch.device(device)
        self.state = agent.initial_state(num_slots, self.device)
        self.starts = np.ones(num_slots, dtype=np.float32)

    def reset(self, slot: int | None = None) -> None:
        """Begin a new episode in ``slot`` (all slots if None)."""
        if slot is None:
            self.starts[:] = 1.0
        else:
            self._grow(slot + 1)
            self.starts[slot] = 1.0

    def _grow(self, n: int) -> None:
        have = self.starts.shape[0]
        if n > have:
            extra = self.agent.initial_state(n - have, self.device)
            self.state = tuple(torch.cat([s, e], dim=1) for s, e in zip(self.state, extra))
            self.starts = np.concatenate([self.starts, np.ones(n - have, dtype=np.float32)])

    def __call__(self, obs: np.ndarray, slots: np.ndarray | list[int] | None = None) -> np.ndarray:
        slots = np.arange(len(obs)) if slots is None else np.asarray(slots)
        self._grow(int(slots.max()) + 1)
        idx = torch.as_tensor(slots, device=self.device)
        h, c = self.state
        x = torch.as_tensor(obs, device=self.device)
        x = x if x.dtype == torch.uint8 else x.float()
        actions, (h_new, c_new) = self.agent.act(x, (h[:, idx], c[:, idx]),
                                                 torch.as_tensor(self.starts[slots], device=self.device),
                                                 deterministic=self.deterministic)
        h[:, idx], c[:, idx] = h_new, c_new
        self.starts[slots] = 0.0
        return actions.cpu().numpy()


def evaluate_policy(policy: PolicyFn, env_id: str, episodes: int = 10, seed: int = EVAL_SEED,
                    success_threshold: float | None = None, max_parallel: int = 10,
                    env_kwargs: dict | None = None) -> EvalResult:
    """Run ``episodes`` episodes of ``env_id`` (episode i reset with seed ``seed + i``).

    Up to ``max_parallel`` episodes run at once; ``policy`` is called once per step on the
    stacked observations of the episodes still running. A stateful policy with a ``reset(slot)``
    method (:class:`RecurrentPolicy`) is told when a slot starts an episode and is called with
    ``slots=`` the running slots.

    Returns are the environment's rewards summed -- except where the environment reports its
    own unshaped score at the episode's end (Doom's ``info["episode_stats"]["native_return"]``):
    then the return is that native score, whatever shaping or reward scale the agent trained
    with, so Doom results are in the scenario's own units (``basic``: best about 95) and compare
    with published ones. Every statistic the environment reports there (kills, max_progress,
    shaped_return, success, ...) is kept in :attr:`EvalResult.stats`.

    Args:
        env_kwargs: keyword arguments for :func:`ppo_course.envs.make_env` (e.g. Doom's ``frame_skip``).

    Raises:
        EnvironmentIdError: ``env_id`` is not registered.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    stateful = callable(getattr(policy, "reset", None))
    envs = [make_env(env_id, **(env_kwargs or {})) for _ in range(min(episodes, max_parallel))]
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    stats: dict[str, np.ndarray] = {}
    slot_episode: list[int | None] = [None] * len(envs)
    obs: list[np.ndarray | None] = [None] * len(envs)
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode < episodes:
            slot_episode[slot] = next_episode
            obs[slot], _ = envs[slot].reset(seed=seed + next_episode)
            next_episode += 1
            if stateful:
                policy.reset(slot)
        else:
            slot_episode[slot] = None

    try:
        for slot in range(len(envs)):
            start(slot)
        while any(e is not None for e in slot_episode):
            active = [s for s, e in enumerate(slot_episode) if e is not None]
            batch = np.stack([obs[s] for s in active])
            actions = np.asarray(policy(batch, slots=active) if stateful else policy(batch))
            for slot, action in zip(active, actions):
                ep = slot_episode[slot]
                obs[slot], reward, terminated, truncated, info = envs[slot].step(env_action(action))
                returns[ep] += float(reward)
                lengths[ep] += 1
                if terminated or truncated:
                    for key, value in info.get("episode_stats", {}).items():
                        stats.setdefault(key, np.full(episodes, np.nan))[ep] = float(value)
                    if "native_return" in info.get("episode_stats", {}):
                        returns[ep] = float(info["episode_stats"]["native_return"])
                    start(slot)
    finally:
        for env in envs:
            env.close()
    return EvalResult(returns, lengths, success_threshold, stats)


def env_action(action: np.ndarray):
    """One row of a batch policy's output as one environment's ``step`` takes it: a Python int for a
    discrete action (a 0-d array), the ``(act_dim,)`` float array itself for a continuous one."""
    return action.item() if action.ndim == 0 else action


def agent_policy(agent: torch.nn.Module, deterministic: bool = True, device: str | torch.device = "cpu") -> PolicyFn:
    """Wrap an actor-critic's :meth:`act` as a NumPy batch policy for :func:`evaluate_policy`.

    ``act`` takes raw observations: an agent trained with ``norm_obs`` normalises them itself, with the
    statistics it was saved with (:class:`~ppo_course.networks.ObsNormalizer`), frozen.

    A recurrent agent gets a fresh :class:`RecurrentPolicy` (blank memory), so make one per
    recorded episode, or call its ``reset``.
    """
    if getattr(agent, "is_recurrent", False):
        return RecurrentPolicy(agent, deterministic, device)

    def policy(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, device=device)
        x = x if x.dtype == torch.uint8 else x.float()
        return agent.act(x, deterministic=deterministic).cpu().numpy()
    return policy


def evaluate(agent: torch.nn.Module, env_id: str, episodes: int = 10, deterministic: bool = True,
             seed: int = EVAL_SEED, success_threshold: float | None = None,
             device: str | torch.device = "cpu", env_kwargs: dict | None = None) -> EvalResult:
    """Evaluate an actor-critic on ``episodes`` fixed-seed episodes.

    Args:
        agent: a network with ``act(obs, deterministic) -> actions``.
        env_id: Gymnasium id.
        episodes: number of episodes.
        deterministic: take the most likely action (argmax of the logits; a Gaussian's mean) instead of sampling.
        seed: episode i starts from ``reset(seed=seed + i)``.
        success_threshold: return counted as a success (LunarLander: 200).
        env_kwargs: keyword arguments for the environment factory (``PPOConfig.env_kwargs``).
    """
    was_training = agent.training
    agent.eval()
    try:
        with weight_snapshot(agent):  # the weights are fixed for the whole evaluation
            return evaluate_policy(agent_policy(agent, deterministic, device), env_id, episodes, seed,
                                   success_threshold, env_kwargs=env_kwargs)
    finally:
        agent.train(was_training)
