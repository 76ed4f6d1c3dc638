"""Exact resume: an environment's state as a short record, rebuilt by replaying it.

A Box2D body or a running ViZDoom game cannot be pickled, but it does not need to be: Gymnasium's
simulators are deterministic given the environment's random generator and the actions (LunarLander's
terrain and first push come from ``env.np_random`` at reset; each Doom episode is seeded from it, see
:class:`~ppo_course.envs.doom.VizDoomGymnasiumEnv`). So the state of an environment in mid-episode is
fully described by *where its current episode started* -- the seed it was reset with, or its generator's
state just before the reset -- plus *the actions taken since*. :class:`EpisodeRecorder`, the outermost
wrapper of every training sub-environment, keeps exactly that, and :meth:`EpisodeRecorder.replay` rebuilds
the state in a fresh environment: restore the generator, reset, step through the actions.

That needs each episode to depend on nothing else. Gymnasium's BipedalWalker keeps one Box2D world for
all its episodes, which makes an episode depend on the ones before it; the factories give it a new world
per episode (:class:`~ppo_course.envs.lunar.FreshWorldEachEpisode`). If a replay still does not reproduce
the recorded observation, :meth:`EpisodeRecorder.replay` says so, and the trainer warns.

What lives in the vector env's wrappers (episode-statistics accumulators, the reward normaliser's
discounted return per environment and its running statistics, the observation normaliser's statistics)
is not replayed but copied: :func:`vector_env_state` and :func:`load_vector_env_state`.

The trainer saves both in each checkpoint at an update boundary, so a resumed run continues the
episodes in progress exactly where they were (``tests/test_resume.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np


class EpisodeRecorder(gym.Wrapper):
    """Records how the current episode started and the actions taken since, and can replay them.

    ``episode_log()`` returns ``{"start": {"seed": s} or {"rng": bit-generator state}, "actions":
    [a_0, a_1, ...], "last_obs": the observation the last call returned}``; ``replay(log)`` puts a
    fresh copy of the same environment into that state and returns True when the replayed
    observation equals ``last_obs`` (False means the simulator is not deterministic: the episode
    continues from the replayed state).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._start: dict[str, Any] | None = None
        self._actions: list = []
        self._last_obs = None
        self.pending_log: dict[str, Any] | None = None  #: set by the vector env's ``set_attr`` before ``replay``

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._start = {"seed": int(seed)}
        else:  # the reset draws from the generator as it is now
            self._start = {"rng": copy.deepcopy(self.unwrapped.np_random.bit_generator.state)}
        self._actions = []
        obs, info = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        return obs, info

    def step(self, action):
        self._actions.append(np.copy(action))
        result = self.env.step(action)
        self._last_obs = result[0]
        return result

    def episode_log(self) -> dict[str, Any]:
        """How to rebuild this environment's state (see the class docstring); picklable."""
        if self._start is None:
            raise RuntimeError("the environment has not been reset yet: there is no episode to record")
        return {"start": copy.deepcopy(self._start), "actions": list(self._actions),
                "last_obs": np.copy(self._last_obs)}

    def replay(self, log: dict[str, Any] | None = None) -> bool:
        """Rebuild the state ``log`` describes (default: ``pending_log``); True when it reproduced ``last_obs``."""
        log = self.pending_log if log is None else log
        self.pending_log = None
        if "seed" in log["start"]:
            obs, _ = self.reset(seed=log["start"]["seed"])
        else:
            self.unwrapped.np_random.bit_generator.state = copy.deepcopy(log["start"]["rng"])
            obs, _ = self.reset()
        for action in log["actions"]:
            obs = self.step(action)[0]
        return bool(np.array_equal(obs, log["last_obs"]))


#: Per-environment running state kept by Gymnasium's vector wrappers (copied, not replayed).
_WRAPPER_STATE = {
    "RecordEpisodeStatistics": ("episode_returns", "episode_lengths", "episode_count", "prev_dones"),
    "NormalizeReward": ("accumulated_reward", "_prev_dones"),
}
_RUNNING_STATS = ("return_rms", "obs_rms")  # Gymnasium's RunningMeanStd: mean, var, count


def _wrappers(envs: gym.vector.VectorEnv):
    while isinstance(envs, gym.vector.VectorWrapper):
        yield envs
        envs = envs.env


def vector_env_state(envs: gym.vector.VectorEnv) -> list[dict[str, Any]]:
    """The running state of each wrapper around ``envs``, outermost first (copies; picklable)."""
    states = []
    for wrapper in _wrappers(envs):
        state = {name: copy.deepcopy(getattr(wrapper, name))
                 for name in _WRAPPER_STATE.get(type(wrapper).__name__, ()) if hasattr(wrapper, name)}
        for name in _RUNNING_STATS:
            rms = vars(wrapper).get(name)
            if rms is not None:
                state[name] = {"mean": np.copy(rms.mean), "var": np.copy(rms.var), "count": rms.count}
        states.append({"wrapper": type(wrapper).__name__, "state": state})
    return states


def load_vector_env_state(envs: gym.vector.VectorEnv, states: list[dict[str, Any]]) -> None:
    """Undo :func:`vector_env_state` on vector env of the same construction.

    Raises:
        ValueError: the wrappers around ``envs`` are not the ones the state was taken from.
    """
    wrappers = list(_wrappers(envs))
    names = [type(w).__name__ for w in wrappers]
    if names != [s["wrapper"] for s in states]:
        raise ValueError(f"the saved environment state is for wrappers {[s['wrapper'] for s in states]}, "
                         f"these envs have {names}")
    for wrapper, saved in zip(wrappers, states):
        for name, value in saved["state"].items():
            if name in _RUNNING_STATS:
                rms = vars(wrapper)[name]
                rms.mean, rms.var, rms.count = np.copy(value["mean"]), np.copy(value["var"]), value["count"]
            else:
                setattr(wrapper, name, copy.deepcopy(value))


def replay_episodes(envs: gym.vector.VectorEnv, logs: list[dict[str, Any]]) -> list[int]:
    """Replay ``logs`` (one :meth:`EpisodeRecorder.episode_log` per sub-environment, in order) into
    ``envs``' sub-environments; returns the indices of those whose replay did not reproduce the
    recorded observation. Works for sync and async vector envs (``set_attr`` then ``call``).

    Raises:
        ValueError: the number of logs is not ``envs.num_envs``.
    """
    if len(logs) != envs.num_envs:
        raise ValueError(f"{len(logs)} episode logs for {envs.num_envs} environments")
    base = envs.unwrapped  # Gymnasium's vector wrappers do not pass set_attr/call on
    base.set_attr("pending_log", list(logs))
    return [i for i, same in enumerate(base.call("replay")) if not same]


def episode_logs(envs: gym.vector.VectorEnv) -> list[dict[str, Any]]:
    """Every sub-environment's :meth:`EpisodeRecorder.episode_log`, in order."""
    return list(envs.unwrapped.call("episode_log"))
