"""Gymnasium environments for the LunarLander half of the course (any registered id works).

Gymnasium 1.x vector environments reset a finished sub-environment on the *next* call to
``step`` by default (``AutoresetMode.NEXT_STEP``): the step after an episode ends returns
the reset observation, reward 0, and ignores the action. Stored naively, that step is a
fake transition. We ask for ``AutoresetMode.SAME_STEP`` instead, explicitly: the step that
ends an episode returns the *new* episode's first observation, and the ended episode's
last observation arrives in ``info["final_obs"]`` (masked by ``info["_final_obs"]``). Every
stored step is then a real transition, and the trainer can bootstrap truncated episodes
from V(final_obs). ``tests/test_envs.py`` checks both facts.

**Continuous actions.** For a ``Box`` action space every environment made here clips the actions
it receives to the space's bounds (Gymnasium's ``ClipAction``, as CleanRL's
``ppo_continuous_action.py`` does). The Gaussian policy's samples are unbounded; the rollout keeps
each sample as drawn, and its log-probability is that of the sample, so the update scores exactly
what the policy did, while the physics only ever sees a legal action. Doing it in the environment
means that training, evaluation and recording all clip the same way, with no code of their own.
The wrapped environment's action space reads ``Box(-inf, inf)``: it accepts any real action.

**Observation normalisation** (``norm_obs``): :class:`NormalizeObservation`, the statistics and
formula of Gymnasium's vector ``NormalizeObservation`` plus CleanRL's clip to +-10. Gymnasium's own
wrapper refuses same-step autoreset, and it would leave ``info["final_obs"]`` raw, so the critic
would bootstrap truncated episodes from observations on another scale.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.utils import RunningMeanStd

from ..networks import OBS_CLIP, OBS_EPSILON
from .replay import EpisodeRecorder


class EnvironmentIdError(ValueError):
    """The environment id is not registered with Gymnasium (or its extra is not installed)."""


def check_env_id(env_id: str) -> None:
    """Raise :class:`EnvironmentIdError` with one readable line if ``env_id`` cannot be made."""
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise EnvironmentIdError(f"unknown environment id {env_id!r}: {exc}") from None


def make_env(env_id: str, render_mode: str | None = None, **kwargs) -> gym.Env:
    """One environment, e.g. for evaluation or recording (``render_mode="rgb_array"``); ``Box`` actions
    are clipped to their bounds.

    Raises:
        EnvironmentIdError: ``env_id`` is not registered, or needs an extra that is not installed.
    """
    check_env_id(env_id)
    try:
        env = gym.make(env_id, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise EnvironmentIdError(f"{env_id} needs an extra package: {exc}") from None
    if _keeps_one_world(env_id):
        env = FreshWorldEachEpisode(env)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.ClipAction(env)  # see the module docstring
    return env


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool = False, norm_reward: bool = False,
                    gamma: float = 0.99, norm_obs: bool = False) -> gym.vector.VectorEnv:
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
        norm_obs: normalise observations with running statistics, clipped to +-10
            (:class:`NormalizeObservation`); flat observation vectors only.
        asynchronous: one subprocess per copy (``AsyncVectorEnv``) instead of stepping them
            in turn in this process (``SyncVectorEnv``). For cheap environments such as
            LunarLander on a few cores, sync is faster: the inter-process traffic costs more
            than the physics.

    ``Box`` actions are clipped to their bounds (``ClipAction``; see the module docstring).

    Raises:
        EnvironmentIdError: ``env_id`` is not registered.
        ValueError: ``norm_obs`` for observations that are not flat float vectors.
    """
    check_env_id(env_id)
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="async" if asynchronous else "sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                        # FreshWorldEachEpisode where needed, then what a checkpoint needs to rebuild each env
                        wrappers=[*([FreshWorldEachEpisode] if _keeps_one_world(env_id) else []), EpisodeRecorder])
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = gym.wrappers.vector.ClipAction(envs)
    if norm_obs:
        space = envs.single_observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and space.dtype != np.uint8):
            envs.close()
            raise ValueError(f"norm_obs normalises flat observation vectors; {env_id} gives {space}")
        envs = NormalizeObservation(envs)
    if norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=gamma)
    return envs


def _keeps_one_world(env_id: str) -> bool:
    """Gymnasium's BipedalWalker builds its Box2D world once and reuses it for every episode."""
    return env_id.split("/")[-1].startswith("BipedalWalker")


class FreshWorldEachEpisode(gym.Wrapper):
    """A new Box2D world at every reset, for environments that otherwise keep one for all their episodes.

    Gymnasium's BipedalWalker creates its ``b2World`` once: an episode then also depends on every episode
    before it in that world (Box2D's internal ordering of bodies and contacts), so the same seed and actions
    replayed in a fresh environment drift apart after a few steps, and a resumed run could not continue
    exactly (:mod:`ppo_course.envs.replay`). LunarLander already makes a new world in ``reset``; this does the
    same for the others, so that each episode is a function of its seed and actions alone. The physics of
    an episode are unchanged.
    """

    def reset(self, **kwargs):
        import Box2D

        unwrapped = self.unwrapped
        unwrapped._destroy()  # the old world's bodies, while that world still exists
        unwrapped.world = Box2D.b2World()
        return self.env.reset(**kwargs)


def wrapper_attr(envs: gym.vector.VectorEnv, name: str, default: Any = None) -> Any:
    """Attribute ``name`` of the outermost wrapper around ``envs`` that has it (``"return_rms"`` of the
    reward normaliser, ``"obs_rms"`` of :class:`NormalizeObservation`), else ``default``.

    Gymnasium's vector wrappers do not pass attribute look-ups on to the env they wrap, so this walks
    down the ``.env`` chain.
    """
    while envs is not None:
        if name in vars(envs):
            return vars(envs)[name]
        envs = getattr(envs, "env", None)
    return default


class NormalizeObservation(gym.vector.VectorWrapper):
    """Observations scaled to zero mean and unit variance by running statistics, then clipped to +-``clip``.

    ``obs_rms`` (Gymnasium's ``RunningMeanStd``, float64) is updated with every batch of observations
    that ``reset`` and ``step`` return, then those are normalised: ``clip((obs - mean) / sqrt(var +
    epsilon), -clip, clip)``, as float32 -- Gymnasium's ``NormalizeObservation`` followed by CleanRL's clip.
    Under same-step autoreset the last observation of an ended episode, ``info["final_obs"]``, is
    normalised too, with the same statistics (it does not update them). The formula and constants are
    those of :class:`ppo_course.networks.ObsNormalizer`, which applies saved statistics to raw
    observations outside training.

    Set ``update_running_mean = False`` to freeze the statistics.
    """

    def __init__(self, env: gym.vector.VectorEnv, clip: float = OBS_CLIP, epsilon: float = OBS_EPSILON):
        super().__init__(env)
        shape = env.single_observation_space.shape
        self.obs_rms = RunningMeanStd(shape=shape, dtype=np.float64)
        self.clip, self.epsilon, self.update_running_mean = clip, epsilon, True
        self.single_observation_space = gym.spaces.Box(-clip, clip, shape, np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """``(..., obs_dim)`` raw -> normalised float32, with the current statistics (no update)."""
        scaled = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        if self.update_running_mean:
            self.obs_rms.update(obs)
        return self.normalize(obs)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, actions):
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        obs = self._observe(obs)
        if "final_obs" in info:
            final_obs = info["final_obs"].copy()
            for i in np.flatnonzero(info["_final_obs"]):
                final_obs[i] = self.normalize(final_obs[i])
            info = {**info, "final_obs": final_obs}
        return obs, rewards, terminations, truncations, info
