"""Collecting experience: notebook 04's loop, as the trainer runs it.

:class:`RolloutCollector` steps one vector env with the current policy for ``num_steps`` steps and
returns a :class:`~ppo_course.buffer.RolloutBuffer` plus V of the observation after the last step.
It is CleanRL's rollout loop (``ppo.py``; ``ppo_atari_lstm.py`` for the LSTM state) with two
additions: truncated episodes are bootstrapped from V(final observation) (``final_values``), and
small feed-forward agents are scored after the rollout instead of step by step.

Running several vector envs at once, with a background thread, is a speed device kept apart in
:mod:`ppo_course.pipelined`; it reuses the per-step pieces of this class.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .buffer import RolloutBuffer
from .envs.replay import episode_logs, load_vector_env_state, replay_episodes, vector_env_state
from .networks import weight_snapshot


class RolloutCollector:
    """Steps a vector env with the current policy and fills a :class:`RolloutBuffer`.

    The collector owns the environments' running state (the next observation), so consecutive
    rollouts continue the same episodes: a rollout boundary is a *cut*, not an episode end, and GAE
    bootstraps across it from V(next observation).

    For a recurrent agent (``agent.is_recurrent``) it also owns the LSTM state ``(h, c)``, each
    ``(1, num_envs, hidden)``, and carries it from step to step and rollout to rollout; the buffer
    gets the state the rollout started from (``initial_lstm_state``) and every step's episode-start
    flag (``starts``), which is all the update needs to replay the memory (CleanRL's
    ``ppo_atari_lstm.py`` does the same).

    **Score after the rollout** (the one option). An agent that sets ``score_after_rollout = True``
    (:class:`~ppo_course.networks.MLPActorCritic` and :class:`~ppo_course.networks.GaussianActorCritic`
    do) only *samples* at each step, with ``agent.sample(x)``; log pi(a_t | s_t) and V(s_t) of all T x N
    samples then come from one batched ``agent.get_action_and_value(obs, actions)``. The weights do not
    change during a rollout, so these are the numbers a per-step call gives, computed by the function the
    update calls; for a small MLP a rollout step costs PyTorch's per-call overhead rather than arithmetic,
    so one batched pass is much cheaper than T small ones (``benchmarks/throughput.py``).

    Actions are stored as the policy gave them: ``(T, N)`` int64 indices, or ``(T, N, act_dim)`` float32
    for a Gaussian policy -- the raw samples; the environment clips what it receives to its bounds.

    Args:
        envs: one vector env from :func:`ppo_course.envs.make_vector_env` (same-step autoreset).
        agent: a network with ``get_action_and_value(x, ...)`` (returning ``(action, logprob,
            entropy, value)``, a named tuple or a plain one) and ``get_value(x, ...)``.
        num_steps: steps per environment per rollout (T).
        device: where the buffer and the forward passes live.
        seed: seed of the first reset; environment i gets ``seed + i``.

    Raises:
        TypeError: ``envs`` is a list (several vector envs: use
            :class:`~ppo_course.pipelined.PipelinedCollector`).
    """

    def __init__(self, envs, agent: nn.Module, num_steps: int, device: torch.device | str = "cpu", seed: int = 0):
        if isinstance(envs, (list, tuple)):
            raise TypeError("RolloutCollector steps one vector env; for several env groups use "
                            "ppo_course.pipelined.PipelinedCollector (or trainer.make_collector)")
        self.envs, self.agent, self.num_steps, self.device = envs, agent, num_steps, torch.device(device)
        self.num_envs = envs.num_envs
        space = envs.single_observation_space
        self.obs_shape = tuple(space.shape)
        self.obs_dtype = np.uint8 if space.dtype == np.uint8 else np.float32
        self.next_obs, _ = envs.reset(seed=seed)  # a vector reset(seed=s) seeds its env j with s + j
        self.next_start = np.ones(self.num_envs, dtype=np.float32)  # 1.0: next_obs begins an episode
        self.recurrent = bool(getattr(agent, "is_recurrent", False))
        self.score_after_rollout = not self.recurrent and bool(getattr(agent, "score_after_rollout", False))
        #: the LSTM state ``(h, c)`` after the last step, each ``(1, num_envs, hidden)`` (recurrent agents)
        self.lstm_state = agent.initial_state(self.num_envs, self.device) if self.recurrent else None
        self.episode_returns: list[float] = []  #: returns of the episodes that ended in the last rollout
        self.episode_lengths: list[int] = []
        #: statistics the env reports for those episodes (Doom: ``info["final_info"]["episode_stats"]``)
        self.episode_stats: list[dict[str, float]] = []

    def close(self) -> None:
        """Close the environments."""
        self.envs.close()

    @torch.no_grad()
    def collect(self) -> tuple[RolloutBuffer, torch.Tensor]:
        """Run one rollout of ``num_steps`` steps in every environment.

        Returns:
            ``(buffer, next_value)``: the filled buffer (``(T, N, ...)`` tensors) and the ``(N,)``
            float32 V of the observation after the last step, for the bootstrap at the cut.
        """
        # The weights do not change during a rollout: large ones are copied once into the layout the
        # forward pass reads fastest (weight_snapshot). inference_mode also skips autograd's version
        # counting (no_grad does not); the buffer's tensors are made after the loop, outside it.
        with weight_snapshot(self.agent):
            self.begin()
            with torch.inference_mode():
                for t in range(self.num_steps):
                    actions = self.act(t)                      # s_t -> a_t (and log pi, V unless scored after)
                    self.record(t, self.envs.step(actions))    # r_t, terminated/truncated, s_{t+1}
            return self.finish()

    # -- the four pieces of a rollout -------------------------------------------------------------------
    def begin(self) -> None:
        """Start a rollout: empty per-step storage, gathered as NumPy (one conversion per rollout)."""
        T, N = self.num_steps, self.num_envs
        self._obs = np.empty((T, N, *self.obs_shape), dtype=self.obs_dtype)
        self._rewards, self._terminations, self._truncations, self._starts = (
            np.zeros((T, N), dtype=np.float32) for _ in range(4))
        self._actions, self._logprobs, self._values = [], [], []  # per step, (N,) tensors ((N, act_dim) actions)
        self._final_values = torch.zeros((T, N), device=self.device)
        self._initial_lstm_state = self.lstm_state
        self.episode_returns, self.episode_lengths, self.episode_stats = [], [], []

    def act(self, t: int) -> np.ndarray:
        """Choose the actions for step t from the latest observations; store s_t and what the policy said."""
        self._obs[t], self._starts[t] = self.next_obs, self.next_start
        x = self._net_input(self.next_obs)
        if self.recurrent:
            starts = torch.as_tensor(self.next_start, device=self.device)
            out = self.agent.get_action_and_value(x, self.lstm_state, starts)
            self.lstm_state = out.lstm_state  # the memory after s_t; a reset is applied at the next step
            action, logprob, value = out.action, out.logprob, out.value
        elif self.score_after_rollout:
            action = self.agent.sample(x)  # scored in finish()
            logprob = value = None
        else:  # any (action, logprob, entropy, value) tuple will do, e.g. a learner's network in ex05
            action, logprob, _, value = self.agent.get_action_and_value(x)
        self._actions.append(action)
        if logprob is not None:
            self._logprobs.append(logprob)
            self._values.append(value)
        return action.cpu().numpy()

    def record(self, t: int, step_result: tuple) -> None:
        """Store what ``envs.step`` returned for step t and move on to the next observation."""
        self.next_obs, self._rewards[t], self._terminations[t], self._truncations[t], info = step_result
        if self._truncations[t].any():
            # Same-step autoreset: next_obs already belongs to the new episode, and the cut episode's last
            # observation is in info["final_obs"]. Bootstrap from its value. A recurrent V(final_obs) must
            # see the cut episode's memory: the carried state still holds it (the reset happens at the
            # next step, through next_start), so it is valued from that state, unmasked, and not carried on.
            idx = np.flatnonzero(self._truncations[t])
            final_obs = np.stack([info["final_obs"][i] for i in idx])
            self._final_values[t, torch.as_tensor(idx, device=self.device)] = self._value(final_obs, idx)
        self.next_start = np.logical_or(self._terminations[t], self._truncations[t]).astype(np.float32)
        if "_episode" in info:
            self._record_episodes(info)

    def finish(self) -> tuple[RolloutBuffer, torch.Tensor]:
        """The rollout as a :class:`RolloutBuffer`, and V(next observation) for the bootstrap."""
        T, N = self.num_steps, self.num_envs
        next_value = self._value(self.next_obs)
        as_tensor = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        obs, actions = as_tensor(self._obs), torch.stack(self._actions)
        if self.score_after_rollout:  # log pi(a_t|s_t) and V(s_t) for all T x N samples in one pass
            _, logprobs, _, values = self.agent.get_action_and_value(
                self._net_input(obs.reshape(T * N, *self.obs_shape)), actions.reshape(T * N, *actions.shape[2:]))
            logprobs, values = logprobs.reshape(T, N), values.reshape(T, N)
        else:
            logprobs, values = torch.stack(self._logprobs), torch.stack(self._values)
        initial = self._initial_lstm_state
        if initial is not None:  # the update unrolls from it with autograd on: a normal tensor, not an inference one
            initial = tuple(s.clone() for s in initial)
        buf = RolloutBuffer(obs=obs, actions=actions, logprobs=logprobs, values=values,
                            rewards=as_tensor(self._rewards), terminations=as_tensor(self._terminations),
                            truncations=as_tensor(self._truncations), final_values=self._final_values,
                            starts=as_tensor(self._starts), initial_lstm_state=initial)
        return buf, next_value

    # -- exact resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the next rollout depends on besides the agent and the global RNGs, taken between
        rollouts: each environment's episode in progress as a log to replay and the vector wrappers'
        running state (:mod:`ppo_course.envs.replay`), the next observation, the episode-start flags
        and the LSTM state. Picklable (the trainer puts it in checkpoints)."""
        lstm = None if self.lstm_state is None else tuple(s.clone() for s in self.lstm_state)
        return {"episodes": episode_logs(self.envs), "wrappers": vector_env_state(self.envs),
                "next_obs": np.copy(self.next_obs), "next_start": np.copy(self.next_start), "lstm_state": lstm}

    def load_state_dict(self, state: dict) -> list[int]:
        """Undo :meth:`state_dict` in a collector built the same way (same environments, same agent):
        every environment replays its episode in progress, then the wrappers' state is copied in.

        Returns:
            The environments whose replay did not reproduce the saved observation (empty when the
            simulator is deterministic, as Box2D and ViZDoom are); they continue from the replayed state.

        Raises:
            ValueError: a state taken from a different number of environments or other wrappers.
        """
        diverged = replay_episodes(self.envs, state["episodes"])
        load_vector_env_state(self.envs, state["wrappers"])
        self.next_obs, self.next_start = np.copy(state["next_obs"]), np.copy(state["next_start"])
        if state["lstm_state"] is not None:
            self.lstm_state = tuple(s.to(self.device) for s in state["lstm_state"])
        return diverged

    # -- helpers ---------------------------------------------------------------------------------------
    def _net_input(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as the network takes them: float32 vectors, or uint8 pixels as they are (the CNN
        scales them; a quarter of the bytes to move)."""
        x = torch.as_tensor(obs, device=self.device)
        return x if x.dtype == torch.uint8 else x.float()

    def _value(self, obs: np.ndarray, envs: np.ndarray | None = None) -> torch.Tensor:
        """V(obs) for environments ``envs`` (all by default), without advancing the carried LSTM state.

        For a recurrent agent V depends on the episode's history, held in the carried state: for all
        environments it is masked by ``next_start`` (obs is the next step's), for a subset (final
        observations of cut episodes) it is used unmasked.
        """
        x = self._net_input(obs)
        if not self.recurrent:
            return self.agent.get_value(x)
        h, c = self.lstm_state
        if envs is None:
            return self.agent.get_value(x, (h, c), torch.as_tensor(self.next_start, device=self.device))
        idx = torch.as_tensor(envs, device=self.device)
        return self.agent.get_value(x, (h[:, idx], c[:, idx]), torch.zeros(len(envs), device=self.device))

    def _record_episodes(self, info: dict) -> None:
        """Keep the return, length and (Doom) statistics of the episodes that ended in this step."""
        for i in np.flatnonzero(info["_episode"]):
            self.episode_returns.append(float(info["episode"]["r"][i]))
            self.episode_lengths.append(int(info["episode"]["l"][i]))
        stats = info.get("final_info", {}).get("episode_stats")
        if stats is not None:
            for i in np.flatnonzero(info["final_info"]["_episode_stats"]):
                self.episode_stats.append({k: float(v[i]) for k, v in stats.items() if not k.startswith("_")})
