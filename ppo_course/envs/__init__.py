"""Environment factories: Gymnasium vector envs (``lunar``) and ViZDoom scenarios (``doom``).

An id ``"doom:<scenario>"`` (e.g. ``doom:basic``) goes to :mod:`ppo_course.envs.doom`; any other id
is a Gymnasium id, handled by :mod:`ppo_course.envs.lunar` (discrete or continuous actions). Both kinds give the
same vector-env interface: same-step autoreset, ``RecordEpisodeStatistics``, time-outs as truncations.
"""

from __future__ import annotations

import gymnasium as gym

from . import lunar
from .lunar import EnvironmentIdError, wrapper_attr

DOOM_PREFIX = "doom:"


def is_doom(env_id: str) -> bool:
    """True for ``"doom:<scenario>"`` ids."""
    return isinstance(env_id, str) and env_id.startswith(DOOM_PREFIX)


def check_env_id(env_id: str) -> None:
    """Raise :class:`EnvironmentIdError` with one readable line if ``env_id`` cannot be made."""
    if is_doom(env_id):
        from . import doom

        doom.scenario_of(env_id)
    else:
        lunar.check_env_id(env_id)


def make_env(env_id: str, render_mode: str | None = None, **env_kwargs) -> gym.Env:
    """One environment (see :func:`ppo_course.envs.lunar.make_env`, :func:`ppo_course.envs.doom.make_env`)."""
    if is_doom(env_id):
        from . import doom

        return doom.make_env(env_id, render_mode=render_mode, **env_kwargs)
    return lunar.make_env(env_id, render_mode=render_mode, **env_kwargs)


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool = False, norm_reward: bool = False,
                    gamma: float = 0.99, norm_obs: bool = False, **env_kwargs) -> gym.vector.VectorEnv:
    """``num_envs`` copies in one vector env with same-step autoreset and episode statistics.

    ``env_kwargs`` are Doom settings (``frame_skip``, ``frame_stack``, ``resolution``, ``shaping``,
    ``episode_timeout``, ``screen_resolution``); Gymnasium ids take none. ``norm_obs`` (flat
    observations only) normalises observations (:class:`ppo_course.envs.lunar.NormalizeObservation`).

    Raises:
        EnvironmentIdError: unknown id or scenario.
        ValueError: an unknown or bad keyword argument, or ``norm_obs`` for pixel observations.
    """
    if is_doom(env_id):
        from . import doom

        if norm_obs:
            raise ValueError(f"norm_obs normalises flat observation vectors; {env_id} gives pixels")
        return doom.make_vector_env(env_id, num_envs, asynchronous=asynchronous, norm_reward=norm_reward,
                                    gamma=gamma, **env_kwargs)
    if env_kwargs:
        raise ValueError(f"{env_id} takes no env_kwargs (got {sorted(env_kwargs)}); they are for doom:<scenario> ids")
    return lunar.make_vector_env(env_id, num_envs, asynchronous=asynchronous, norm_reward=norm_reward, gamma=gamma,
                                 norm_obs=norm_obs)


__all__ = ["EnvironmentIdError", "check_env_id", "is_doom", "make_env", "make_vector_env", "wrapper_attr"]
