"""The PPO training loop: rollout -> bootstrap -> GAE -> K epochs of minibatch updates.

Structure and defaults follow CleanRL's ``ppo.py`` (and Algorithm 1 of the PPO paper); the
pieces come from the rest of the package, so there is exactly one GAE (``advantages``),
one loss (``losses``) and one set of schedules (``schedules``).

Use :func:`train` for a whole run with logging, evaluation and checkpoints, or the two
stages on their own -- :class:`RolloutCollector` and :func:`ppo_update` -- as notebook 07 does.

Recurrent agents (``agent.is_recurrent``, :class:`~ppo_course.networks.RecurrentActorCritic`)
take the same path with two differences, both there so that the update sees exactly the
policy that acted (CleanRL's ``ppo_atari_lstm.py``):

* the collector carries the LSTM state from step to step and rollout to rollout, and stores
  the state the rollout *started* from plus the per-step episode-start flags;
* the update's minibatches are sets of whole environment sequences (all T steps of
  ``num_envs / num_minibatches`` environments), re-unrolled from that stored state with the
  same episode-start masks -- truncated backpropagation through time over the rollout.

Seed 000 (section 4, "LSTM Loop Logic") samples *flat random* minibatches instead and unrolls
the LSTM over them from the snapshot of the first sample. Consecutive samples of such a
minibatch come from different environments and times, so the memory fed to each step is
another trajectory's: the re-computed log-probabilities are not the rollout's, the ratio is
not 1 before the first gradient step, and the clipping then acts on noise.
``tests/test_recurrent.py`` demonstrates both facts.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .advantages import compute_gae
from .buffer import RolloutBuffer
from .checkpoint import BEST, LATEST, CheckpointError, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .config import ConfigError, PPOConfig
from .envs import make_vector_env
from .evaluate import EvalResult, evaluate
from .logging import MetricsLogger
from .losses import explained_variance, ppo_loss
from .networks import build_agent, sample_action
from .schedules import annealed_lr, entropy_coef


#: PyTorch's own thread count for this machine, read before anything changes it (torch_threads = 0 restores it).
DEFAULT_TORCH_THREADS = torch.get_num_threads()


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the update and the last good checkpoint."""


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when a GPU is visible, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------
# Stage 1: collecting experience
# --------------------------------------------------------------------------------------
def make_train_envs(config: PPOConfig) -> list:
    """The training environments a config asks for: ``env_groups`` vector envs (one by default) of
    ``num_envs / env_groups`` environments each, as :class:`RolloutCollector` takes them.

    Raises:
        EnvironmentIdError: ``config.env_id`` is not registered.
    """
    groups = []
    try:
        for _ in range(config.env_groups):
            groups.append(make_vector_env(config.env_id, config.num_envs // config.env_groups,
                                          asynchronous=config.async_envs, norm_reward=config.norm_reward,
                                          gamma=config.gamma, **config.env_kwargs))
    except BaseException:
        for group in groups:
            group.close()
        raise
    return groups


class _Stepped:
    """A step that has already happened (one env group: no background thread), with a Future's ``result()``."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class RolloutCollector:
    """Steps vector envs with the current policy and fills a :class:`RolloutBuffer`.

    The collector owns the environments' running state (the next observation), so
    consecutive rollouts continue the same episodes: a rollout boundary is a *cut*, not an
    episode end, and GAE bootstraps across it from V(next observation).

    For a recurrent agent (``agent.is_recurrent``) it also owns the LSTM state ``(h, c)``,
    each ``(1, num_envs, hidden)``, and the episode-start flags of the next observations; the
    buffer gets the state the rollout started from (``initial_lstm_state``) and the flags of
    every step (``starts``), which is all the update needs to replay the memory.

    For a small feed-forward agent that declares ``score_after_rollout`` (:class:`MLPActorCritic`),
    a step runs the actor alone and samples (Gumbel-max, :func:`ppo_course.networks.sample_action`);
    log pi(a_t | s_t) and V(s_t) of all T x N samples come from one batched
    ``get_action_and_value(obs, actions)`` after the loop. The weights do not change during a
    rollout, so these are the numbers a per-step call would give -- computed by the very function
    the update calls, so the first update's ratio is exactly 1 -- at a fraction of the per-step
    cost, which for a 64-wide MLP is PyTorch's per-operation overhead, not arithmetic
    (``benchmarks/throughput.py``).

    **Env groups.** ``envs`` may also be a list of G vector envs (:func:`make_train_envs` makes
    ``config.env_groups`` of them); their environments fill the buffer's columns in list order. The
    collector then pipelines: a background thread steps one group while the policy chooses the
    actions of the next, so game time hides behind inference time. Each group's
    actions still come from that group's own latest observations -- the rollout is the same
    kind of data, only the order of work changes. It pays when an env step spends its time outside
    the Python interpreter (ViZDoom's engines run in child processes; OpenCV and PyTorch kernels
    release the GIL): see ``benchmarks/doom_throughput.py``. Meanwhile PyTorch runs on one thread
    (restored after the rollout), leaving the other cores to the group in flight and its game
    processes; on 2 cores that beats two PyTorch threads. With one vector env nothing runs in
    the background, and the steps happen in exactly the order of a hand-written loop (notebook 04).

    Args:
        envs: a vector env made by :func:`ppo_course.envs.make_vector_env` (same-step autoreset),
            or a list of them with the same spaces (env groups).
        agent: network with ``get_action_and_value`` and ``get_value``.
        num_steps: steps per environment per rollout (T).
        device: where the buffer and the forward passes live.
        seed: seed of the first reset; environment i of the rollout (across groups) gets ``seed + i``.

    Raises:
        ValueError: an empty list of groups, or groups whose spaces differ.
    """

    def __init__(self, envs, agent: nn.Module, num_steps: int, device: torch.device | str = "cpu", seed: int = 0):
        self.envs, self.agent, self.num_steps, self.device = envs, agent, num_steps, torch.device(device)
        self.groups = list(envs) if isinstance(envs, (list, tuple)) else [envs]
        if not self.groups:
            raise ValueError("RolloutCollector needs at least one vector env")
        first = self.groups[0]
        if any(g.single_observation_space != first.single_observation_space
               or g.single_action_space != first.single_action_space for g in self.groups):
            raise ValueError("all env groups must have the same observation and action spaces")
        bounds = np.cumsum([0] + [g.num_envs for g in self.groups])
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]  # group g's columns
        self.num_envs = int(bounds[-1])
        obs_space = first.single_observation_space
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        # Per group, NumPy, as the environments return it. Vector reset(seed=s) seeds its env j with s + j.
        self.next_obs = [g.reset(seed=seed + sl.start)[0] for g, sl in zip(self.groups, self._slices)]
        self.next_start = np.ones(self.num_envs, dtype=np.float32)  # 1.0: the next observation begins an episode
        self.recurrent = bool(getattr(agent, "is_recurrent", False))
        # Small feed-forward agents only sample while stepping; log-probabilities and values of the whole
        # rollout come from one batched pass after it (``MLPActorCritic.score_after_rollout``).
        self.score_after_rollout = not self.recurrent and bool(getattr(agent, "score_after_rollout", False))
        #: per group, the LSTM state ``(h, c)`` of its environments (recurrent agents), each ``(1, n_g, hidden)``
        self.lstm_states = ([agent.initial_state(sl.stop - sl.start, self.device) for sl in self._slices]
                            if self.recurrent else None)
        self._stepper = ThreadPoolExecutor(1, thread_name_prefix="env-group") if len(self.groups) > 1 else None
        self.episode_returns: list[float] = []  #: returns of episodes finished in the last rollout
        self.episode_lengths: list[int] = []
        #: statistics the env reports for those episodes (Doom: ``info["final_info"]["episode_stats"]``)
        self.episode_stats: list[dict[str, float]] = []

    def close(self) -> None:
        """Close the environments (every group) and the background stepping thread."""
        if self._stepper is not None:
            self._stepper.shutdown()
        for group in self.groups:
            group.close()

    def _net_input(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as the network's input: float32 vectors (no copy on the CPU), or uint8 pixels as they
        are (the CNN scales them; a quarter of the bytes to move)."""
        x = torch.as_tensor(obs, device=self.device)
        return x if x.dtype == torch.uint8 else x.float()

    def _value(self, g: int, obs: np.ndarray, envs: np.ndarray | None = None) -> torch.Tensor:
        """V(obs) for environments ``envs`` of group g (all of them by default), without advancing the
        carried LSTM state. For a recurrent agent V depends on the episode's history, held in the group's state.
        """
        x = self._net_input(obs)
        if not self.recurrent:
            return self.agent.get_value(x)
        h, c = self.lstm_states[g]
        if envs is None:
            starts = torch.as_tensor(self.next_start[self._slices[g]], device=self.device)
            return self.agent.get_value(x, (h, c), starts)
        idx = torch.as_tensor(envs, device=self.device)
        return self.agent.get_value(x, (h[:, idx], c[:, idx]), torch.zeros(len(envs), device=self.device))

    def _step(self, g: int, actions: np.ndarray) -> "Future | _Stepped":
        """Step group g: in the background thread when there are several groups, else right here."""
        if self._stepper is not None:
            return self._stepper.submit(self.groups[g].step, actions)
        return _Stepped(self.groups[0].step(actions))

    def _record_episodes(self, info: dict) -> None:
        """Keep the return, length and (Doom) statistics of the episodes that ended in this step."""
        for i in np.flatnonzero(info["_episode"]):
            self.episode_returns.append(float(info["episode"]["r"][i]))
            self.episode_lengths.append(int(info["episode"]["l"][i]))
        stats = info.get("final_info", {}).get("episode_stats")
        if stats is not None:
            for i in np.flatnonzero(info["final_info"]["_episode_stats"]):
                self.episode_stats.append({k: float(v[i]) for k, v in stats.items() if not k.startswith("_")})

    @torch.no_grad()
    def collect(self) -> tuple[RolloutBuffer, torch.Tensor]:
        """Run one rollout of ``num_steps`` steps in every environment.

        Returns:
            ``(buffer, next_value)``: the filled buffer (``(T, N, ...)`` tensors) and ``(N,)``
            V of the observation after the last step, for bootstrapping at the cut.
        """
        T, N, G = self.num_steps, self.num_envs, len(self.groups)
        # What the environments hand back is gathered in NumPy and converted once per rollout;
        # per-step tensor creation would cost more than the policy's forward pass.
        obs = np.empty((T, N, *self.obs_shape), dtype=np.uint8 if self.obs_dtype == torch.uint8 else np.float32)
        rewards, terminations, truncations, starts = (np.zeros((T, N), dtype=np.float32) for _ in range(4))
        actions, logprobs, values = ([[] for _ in range(G)] for _ in range(3))  # per group, per-step tensors
        final_values = torch.zeros((T, N), device=self.device)
        self.episode_returns, self.episode_lengths, self.episode_stats = [], [], []
        initial_lstm_states = list(self.lstm_states) if self.recurrent else None
        if self.score_after_rollout:  # the sampler's noise for the whole rollout in one draw (see sample_action)
            n_actions = int(self.groups[0].single_action_space.n)
            noise = torch.empty((T, N, n_actions), device=self.device).exponential_().log_()
            noise = [noise[:, sl].unbind(0) for sl in self._slices]  # per group, T views of (n_g, n_actions)

        def act(t: int, g: int) -> np.ndarray:
            """Choose group g's actions at step t from its latest observations."""
            sl = self._slices[g]
            obs[t, sl], starts[t, sl] = self.next_obs[g], self.next_start[sl]
            x = self._net_input(self.next_obs[g])
            if self.recurrent:
                out = self.agent.get_action_and_value(x, self.lstm_states[g],
                                                      torch.as_tensor(starts[t, sl], device=self.device))
                self.lstm_states[g] = out.lstm_state  # memory after s_t, not yet masked for a reset
                action = out.action
                logprobs[g].append(out.logprob)
                values[g].append(out.value)
            elif self.score_after_rollout:  # the actor alone; scored after the loop
                action = sample_action(self.agent.get_logits(x), log_exponential=noise[g][t])
            else:  # any (action, logprob, entropy, value) tuple will do, e.g. a learner's network in ex05
                action, logprob, _, value = self.agent.get_action_and_value(x)
                logprobs[g].append(logprob)
                values[g].append(value)
            actions[g].append(action)
            return action.cpu().numpy()

        def record(t: int, g: int, result: tuple) -> None:
            """Store what group g's environments returned for step t."""
            sl = self._slices[g]
            self.next_obs[g], rewards[t, sl], terminations[t, sl], truncations[t, sl], info = result
            if truncations[t, sl].any():
                # Same-step autoreset: next_obs already belongs to the new episode; the cut
                # episode's last observation is in info["final_obs"]. Bootstrap from it.
                # A recurrent V(final_obs) must see the *cut episode's* memory: the group's state
                # holds it (the state after s_t); the reset to zeros only happens at the next step,
                # through next_start. So the final observation is valued from that pre-reset state
                # with no masking, and the result is not carried on (the new episode starts blank).
                idx = np.flatnonzero(truncations[t, sl])
                final = np.stack([info["final_obs"][i] for i in idx])
                final_values[t, torch.as_tensor(sl.start + idx, device=self.device)] = self._value(g, final, idx)
            self.next_start[sl] = np.logical_or(terminations[t, sl], truncations[t, sl])
            if "_episode" in info:
                self._record_episodes(info)

        # inference_mode skips autograd's version counting as well (no_grad does not): ~40 % off a small
        # network's per-step cost. Its outputs are concatenated after the loop, outside it, into normal tensors.
        pending: list[Future | _Stepped | None] = [None] * G
        torch_threads = torch.get_num_threads()
        if self._stepper is not None:  # the other cores are for the group stepping in the background
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                for t in range(T):
                    for g in range(G):  # several groups: group g steps in the background while g + 1 chooses
                        if pending[g] is not None:
                            record(t - 1, g, pending[g].result())
                        pending[g] = self._step(g, act(t, g))
                for g in range(G):
                    record(T - 1, g, pending[g].result())
                    pending[g] = None
        finally:  # never leave a group stepping in the background (e.g. on Ctrl-C): its envs may be closed next
            wait([p for p in pending if isinstance(p, Future)])
            torch.set_num_threads(torch_threads)
        next_value = torch.cat([self._value(g, self.next_obs[g]) for g in range(G)])
        cat = lambda per_group: torch.cat([torch.stack(steps) for steps in per_group], dim=1)  # noqa: E731
        initial_lstm_state = None
        if initial_lstm_states is not None:  # the update unrolls from it with autograd on: a normal tensor
            initial_lstm_state = tuple(torch.cat([s[k] for s in initial_lstm_states], dim=1) for k in range(2))
        as_tensor = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        obs, actions = as_tensor(obs), cat(actions)
        if self.score_after_rollout:  # log pi(a_t|s_t) and V(s_t) for all T x N samples in one pass
            _, logprobs, _, values = self.agent.get_action_and_value(
                self._net_input(obs.reshape(T * N, *self.obs_shape)), actions.reshape(T * N))
            logprobs, values = logprobs.reshape(T, N), values.reshape(T, N)
        else:
            logprobs, values = cat(logprobs), cat(values)
        buf = RolloutBuffer(obs=obs, actions=actions, logprobs=logprobs, values=values,
                            rewards=as_tensor(rewards), terminations=as_tensor(terminations),
                            truncations=as_tensor(truncations), final_values=final_values,
                            starts=as_tensor(starts), initial_lstm_state=initial_lstm_state)
        return buf, next_value


# --------------------------------------------------------------------------------------
# Stage 2: learning from it
# --------------------------------------------------------------------------------------
@dataclass
class UpdateStats:
    """Averages over the minibatches of one update (see :func:`ppo_update`)."""

    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    grad_norm: float
    explained_variance: float
    epochs_done: int

    def metrics(self) -> dict[str, float]:
        return {f"train/{k}": float(v) for k, v in self.__dict__.items()}


def minibatch_indices(rng: np.random.Generator, num_steps: int, num_envs: int, num_minibatches: int,
                      recurrent: bool = False, device: torch.device | str = "cpu"):
    """One epoch's minibatches as ``(flat_indices, env_indices)`` pairs, into the ``(T*N, ...)`` flat batch.

    * Feed-forward: a random permutation of all ``T*N`` samples cut into ``num_minibatches``
      equal slices; ``env_indices`` is None.
    * Recurrent: the N environments are permuted and split into ``num_minibatches`` groups;
      a minibatch is every step of its group's environments, time-major (``(T * n_group,)``
      flat indices, row ``t * n_group + j`` = env ``env_indices[j]`` at step t), ready for the
      LSTM to unroll from ``initial_lstm_state[:, env_indices]``.

    Raises:
        ConfigError: recurrent and ``num_minibatches`` does not divide ``num_envs``.
    """
    if recurrent:
        if num_envs % num_minibatches:
            raise ConfigError(f"num_minibatches = {num_minibatches}: must divide num_envs = {num_envs} for a "
                              "recurrent agent (its minibatches are whole environment sequences)")
        flat = torch.arange(num_steps * num_envs, device=device).reshape(num_steps, num_envs)
        for envs in np.split(rng.permutation(num_envs), num_minibatches):
            env_idx = torch.as_tensor(envs, device=device)
            yield flat[:, env_idx].reshape(-1), env_idx
    else:
        batch_size = num_steps * num_envs
        minibatch_size = batch_size // num_minibatches
        order = torch.as_tensor(rng.permutation(batch_size), device=device)
        for start in range(0, batch_size, minibatch_size):
            yield order[start:start + minibatch_size], None


def ppo_update(agent: nn.Module, optimizer: torch.optim.Optimizer, buf: RolloutBuffer, advantages: torch.Tensor,
               returns: torch.Tensor, config: PPOConfig, ent_coef: float, rng: np.random.Generator,
               update: int = 0, on_minibatch: Callable[[int, int, torch.Tensor], None] | None = None) -> UpdateStats:
    """K epochs of shuffled minibatch gradient steps on one rollout (PPO paper, Algorithm 1).

    For a rollout of a recurrent agent (``buf.initial_lstm_state`` is set), minibatches are
    whole environment sequences re-unrolled from the stored initial state with the stored
    episode-start masks (see :func:`minibatch_indices`), so before the first gradient step the
    re-computed log-probabilities are the rollout's. Advantages are normalised per minibatch
    either way (``config.norm_adv``).

    Args:
        agent, optimizer: the network and its optimiser (learning rate already set).
        buf: the rollout; advantages, returns: ``(T, N)`` from :func:`compute_gae`.
        config: supplies ``update_epochs``, ``num_minibatches``, ``clip_coef``, ``vf_coef``,
            ``clip_vloss``, ``norm_adv``, ``max_grad_norm``, ``target_kl``.
        ent_coef: entropy coefficient for this update (from the schedule).
        rng: shuffles the batch (or the environments, for a recurrent agent) each epoch.
        update: the update's number, for error messages.
        on_minibatch: optional ``f(epoch, minibatch, ratio)`` hook (tests use it to see that
            the first minibatch's ratio is exactly 1).

    Raises:
        TrainingDiverged: a minibatch loss is NaN or infinite (no step is taken with it).
        ConfigError: a recurrent rollout whose ``num_envs`` is not divisible by ``num_minibatches``.
    """
    b = buf.flatten(advantages=advantages, returns=returns)
    recurrent = buf.initial_lstm_state is not None
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm")
    sums = torch.zeros(len(names), dtype=torch.float64, device=b["actions"].device)  # read once, at the end
    count, epochs_done = 0, 0
    for epoch in range(config.update_epochs):
        epoch_kl = torch.zeros((), dtype=torch.float64, device=sums.device)
        batches = minibatch_indices(rng, buf.num_steps, buf.num_envs, config.num_minibatches, recurrent,
                                    b["actions"].device)
        for mb, (idx, env_idx) in enumerate(batches):
            obs = b["obs"][idx]
            obs = obs if obs.dtype == torch.uint8 else obs.float()
            if recurrent:
                h0, c0 = buf.initial_lstm_state
                out = agent.get_action_and_value(obs, (h0[:, env_idx], c0[:, env_idx]), b["starts"][idx],
                                                 b["actions"][idx])
            else:
                out = agent.get_action_and_value(obs, b["actions"][idx])
            if on_minibatch is not None:
                on_minibatch(epoch, mb, torch.exp(out.logprob - b["logprobs"][idx]).detach())
            loss = ppo_loss(out.logprob, b["logprobs"][idx], b["advantages"][idx], out.value, b["values"][idx],
                            b["returns"][idx], out.entropy, clip_coef=config.clip_coef, vf_coef=config.vf_coef,
                            ent_coef=ent_coef, clip_vloss=config.clip_vloss, norm_adv=config.norm_adv)
            if not torch.isfinite(loss.loss):
                raise TrainingDiverged(f"non-finite loss ({loss.loss.item()}) at update {update}, "
                                       f"epoch {epoch}, minibatch {mb}")
            optimizer.zero_grad(set_to_none=True)
            loss.loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
            sums += torch.stack([loss.policy_loss.detach(), loss.value_loss.detach(), loss.entropy.detach(),
                                 loss.approx_kl, loss.clip_fraction, grad_norm]).double()
            epoch_kl += loss.approx_kl.double()
            count += 1
        epochs_done += 1
        if config.target_kl is not None and epoch_kl.item() / (mb + 1) > config.target_kl:
            break
    ev = explained_variance(b["values"], b["returns"])
    means = (sums / count).tolist()
    return UpdateStats(**dict(zip(names, means)), explained_variance=ev, epochs_done=epochs_done)


# --------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns."""

    agent: nn.Module
    config: PPOConfig
    run_dir: Path | None
    global_step: int
    best_return: float | None
    last_eval: EvalResult | None
    history: list[dict[str, float]] = field(default_factory=list)  #: one metrics row per update


def _checkpoint_payload(agent, optimizer, config, global_step, update, best_return, obs_shape, n_actions, rng,
                        envs):
    payload = {"model": agent.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
               "global_step": global_step, "update": update, "best_return": best_return,
               "obs_shape": tuple(obs_shape), "n_actions": int(n_actions), "rng": rng_state(rng)}
    rms = getattr(envs, "return_rms", None)  # the reward normaliser's running statistics
    if rms is not None:
        payload["reward_rms"] = {"mean": rms.mean, "var": rms.var, "count": rms.count}
    return payload


def train(config: PPOConfig, run_dir: str | Path | None = None, resume: bool = False, tensorboard: bool = True,
          progress: bool = True, callback: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train a PPO agent on ``config.env_id``.

    Each update: collect ``num_steps`` x ``num_envs`` transitions, bootstrap V at the cut,
    compute GAE, run ``update_epochs`` epochs of ``num_minibatches`` clipped-PPO gradient steps.
    Every ``eval_interval`` steps (and at the end) the agent is evaluated on fixed-seed
    episodes; ``latest.pt`` is written then, and ``best.pt`` whenever the mean return improves.

    Args:
        config: a validated :class:`PPOConfig`.
        run_dir: directory for ``metrics.csv``, TensorBoard events and checkpoints; None
            trains in memory only (no files).
        resume: continue from ``run_dir/latest.pt`` (model, optimiser, step count, RNG
            states); ``config.total_timesteps`` may be raised to train longer.
        tensorboard: also write TensorBoard event files.
        progress: show a tqdm progress bar.
        callback: called with each update's metrics row (the live dashboard uses it).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged: a non-finite loss; the last good checkpoint is left untouched.
        CheckpointError: ``resume`` without a usable ``latest.pt`` for this environment.
        EnvironmentIdError: ``config.env_id`` is not registered.
    """
    from tqdm.auto import tqdm

    config.validate()
    run_dir = Path(run_dir) if run_dir is not None else None
    torch.set_num_threads(config.torch_threads or DEFAULT_TORCH_THREADS)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    minibatch_rng = np.random.default_rng(config.seed)

    ckpt = None
    if resume:
        if run_dir is None:
            raise CheckpointError("resume needs a run directory")
        ckpt = load_checkpoint(run_dir / LATEST, map_location=device)
        if ckpt["config"]["env_id"] != config.env_id:
            raise CheckpointError(f"{run_dir / LATEST} was trained on {ckpt['config']['env_id']}, "
                                  f"not {config.env_id}")
    global_step = ckpt["global_step"] if ckpt else 0
    start_update = ckpt["update"] if ckpt else 0
    best_return = ckpt["best_return"] if ckpt else None

    env_groups = make_train_envs(config)
    envs = env_groups[0]  # the only one when rewards are normalised (config.validate sees to it)
    obs_shape = envs.single_observation_space.shape
    n_actions = int(envs.single_action_space.n)
    agent = build_agent(config, obs_shape, n_actions).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)
    if ckpt:
        agent.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng_state(ckpt["rng"], minibatch_rng)
        if "reward_rms" in ckpt and hasattr(envs, "return_rms"):
            for key, value in ckpt["reward_rms"].items():
                setattr(envs.return_rms, key, value)
    collector = RolloutCollector(env_groups, agent, config.num_steps, device, seed=config.seed + global_step)

    logger = MetricsLogger(run_dir, tensorboard, resume_step=global_step if ckpt else None) if run_dir else None
    if logger and not ckpt:
        logger.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.to_dict().items()))
    recent_returns: deque[float] = deque(maxlen=20)
    history: list[dict[str, float]] = []
    last_eval: EvalResult | None = None
    last_good = (run_dir / LATEST) if (run_dir and (run_dir / LATEST).exists()) else None
    start_time = time.perf_counter()
    start_step = global_step

    def save(name: str) -> Path | None:
        if run_dir is None:
            return None
        return save_checkpoint(run_dir / name, _checkpoint_payload(
            agent, optimizer, config, global_step, update, best_return, obs_shape, n_actions, minibatch_rng, envs))

    eval_time = 0.0

    def run_eval() -> EvalResult:
        nonlocal eval_time
        t0 = time.perf_counter()
        try:
            return evaluate(agent, config.env_id, config.eval_episodes, deterministic=not config.eval_stochastic,
                            success_threshold=config.success_threshold, device=device, env_kwargs=config.env_kwargs)
        finally:
            eval_time += time.perf_counter() - t0

    bar = tqdm(total=config.total_timesteps, initial=min(global_step, config.total_timesteps), unit="step",
               disable=not progress, dynamic_ncols=True, desc=config.env_id)
    update = start_update
    phase = "start"  # "rollout" | "update" | "bookkeeping": what an interruption would cut short
    try:
        while global_step < config.total_timesteps:
            update += 1
            lr = annealed_lr(config.learning_rate, global_step, config.total_timesteps, config.anneal_lr)
            ent = entropy_coef(global_step, config.total_timesteps, config.ent_coef, config.ent_coef_final,
                               config.ent_warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            phase = "rollout"
            buf, next_value = collector.collect()
            advantages, returns = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations,
                                              next_value, buf.final_values, config.gamma, config.gae_lambda)
            phase = "update"
            try:
                stats = ppo_update(agent, optimizer, buf, advantages, returns, config, ent, minibatch_rng, update)
            except TrainingDiverged as exc:
                where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
                raise TrainingDiverged(f"{exc}; training stopped, {where}") from None
            phase = "bookkeeping"
            prev_step, global_step = global_step, global_step + config.batch_size
            recent_returns.extend(collector.episode_returns)

            elapsed = time.perf_counter() - start_time
            row: dict[str, float] = {
                "global_step": global_step, "update": update, "time_s": round(elapsed, 3),
                "charts/learning_rate": lr, "charts/ent_coef": ent,
                "charts/sps": (global_step - start_step) / max(elapsed - eval_time, 1e-9),  # evaluation excluded
                "rollout/episodic_return": (float(np.mean(collector.episode_returns))
                                            if collector.episode_returns else math.nan),
                "rollout/episodic_length": (float(np.mean(collector.episode_lengths))
                                            if collector.episode_lengths else math.nan),
                **stats.metrics(),
            }
            for key in ("kills", "max_progress", "success", "native_return"):  # Doom's episode statistics
                if collector.episode_stats and key in collector.episode_stats[0]:
                    row[f"rollout/{key}"] = float(np.mean([s[key] for s in collector.episode_stats]))
            due = (config.eval_interval > 0 and global_step // config.eval_interval > prev_step // config.eval_interval)
            if due or global_step >= config.total_timesteps:
                last_eval = run_eval()
                row.update(last_eval.metrics())
                if best_return is None or last_eval.mean_return > best_return:
                    best_return = last_eval.mean_return
                    save(BEST)
                last_good = save(LATEST)
            row["charts/eval_time_s"] = round(eval_time, 3)
            history.append(row)
            if logger:
                logger.log(row)
            if callback:
                callback(row)
            postfix = {"return": f"{np.mean(recent_returns):.1f}" if recent_returns else "-",
                       "sps": f"{row['charts/sps']:.0f}"}
            if last_eval is not None:
                postfix["eval"] = f"{last_eval.mean_return:.1f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(min(global_step, config.total_timesteps) - bar.n)
    except KeyboardInterrupt:
        # Outside the gradient steps the weights are those of a finished update -- a consistent
        # state worth keeping. Interrupted mid-update, the previous checkpoint stays as it is.
        if phase == "rollout":
            update -= 1  # this update never happened
        if phase != "update" and run_dir is not None and global_step > start_step:
            save(LATEST)
        raise
    finally:
        bar.close()
        collector.close()
        if logger:
            logger.close()
    return TrainResult(agent, config, run_dir, global_step, best_return, last_eval, history)


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, PPOConfig]:
    """Rebuild the agent and its config from a checkpoint file.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the saved architecture.
    """
    ckpt = load_checkpoint(path, map_location=device)
    config = PPOConfig.from_dict(ckpt["config"])
    agent = build_agent(config, tuple(ckpt["obs_shape"]), ckpt["n_actions"]).to(device)
    try:
        agent.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the saved architecture ({exc})") from None
    agent.eval()
    return agent, config
