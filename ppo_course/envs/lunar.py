"""Gymnasium environments for the LunarLander half of the course (any registered id works).

Gymnasium 1.x vector environments reset a finished sub-environment on the *next* call to
``step`` by default (``AutoresetMode.NEXT_STEP``): the step after an episode ends returns
the reset observation, reward 0, and ignores the action. Stored naively, that step is a
fake transition. We ask for ``AutoresetMode.SAME_STEP`` instead, explicitly: the step that
ends an episode returns the *new* episode's first observation, and the ended episode's
last observation arrives in ``info["final_obs"]`` (masked by ``info["_final_obs"]``). Every
stored step is then a real transition, and the trainer can bootstrap truncated episodes
from V(final_obs). ``tests/test_envs.py`` checks both facts.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.vector import AutoresetMode


class EnvironmentIdError(ValueError):
    """The environment id is not registered with Gymnasium (or its extra is not installed)."""


def check_env_id(env_id: str) -> None:
    """Raise :class:`EnvironmentIdError` with one readable line if ``env_id`` cannot be made."""
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise EnvironmentIdError(f"unknown environment id {env_id!r}: {exc}") from None


def make_env(env_id: str, render_mode: str | None = None, **kwargs) -> gym.Env:
    """One environment, e.g. for evaluation or recording (``render_mode="rgb_array"``).

    Raises:
        EnvironmentIdError: ``env_id`` is not registered, or needs an extra that is not installed.
    """
    check_env_id(env_id)
    try:
        return gym.make(env_id, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise EnvironmentIdError(f"{env_id} needs an extra package: {exc}") from None


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool = False, norm_reward: bool = False,
                    gamma: float = 0.99) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` in one vector env, with same-step autoreset and episode statistics.

    Observations come back as ``(num_envs, *obs_shape)`` arrays. When a sub-environment's
    episode ends, ``info["episode"]`` holds its return ``"r"`` and length ``"l"`` (masked by
    ``info["_episode"]``) and ``info["final_obs"]`` its last observation.

    Args:
        env_id: Gymnasium id, e.g. ``"LunarLander-v3"``.
        num_envs: number of parallel copies.
        norm_reward: divide rewards by a running estimate of the std of the discounted return
            (Gymnasium's ``NormalizeReward``; CleanRL and SB3's ``VecNormalize`` do the same). It keeps
            value targets near unit scale, so the critic's gradient does not dwarf the policy's under
            the shared gradient-norm clip. Episode statistics stay in raw reward units.
        gamma: the discount used for that running return.
        asynchronous: one subprocess per copy (``AsyncVectorEnv``) instead of stepping them
            in turn in this process (``SyncVectorEnv``). For cheap environments such as
            LunarLander on a few cores, sync is faster: the inter-process traffic costs more
            than the physics.

    Raises:
        EnvironmentIdError: ``env_id`` is not registered.
    """
    check_env_id(env_id)
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="async" if asynchronous else "sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=gamma)
    return envs
