"""The PPO training loop: rollout -> bootstrap -> GAE -> K epochs of minibatch updates.

Structure and defaults follow CleanRL's ``ppo.py`` (and Algorithm 1 of the PPO paper); the pieces come
from the rest of the package, so there is exactly one rollout loop (:mod:`ppo_course.rollout`), one
GAE (:mod:`ppo_course.advantages`), one loss (:mod:`ppo_course.losses`) and one set of schedules
(:mod:`ppo_course.schedules`).

Use :func:`train` for a whole run with logging, evaluation and checkpoints, or the two stages on
their own -- :class:`~ppo_course.rollout.RolloutCollector` and :func:`ppo_update` -- as notebook 07
does. :func:`train` reads as notebook 07's loop: set-up (or resume), then per update the schedules,
the rollout, GAE, the update, and the bookkeeping (metrics, evaluation and checkpoints), each a
named function below.

Recurrent agents (``agent.is_recurrent``, :class:`~ppo_course.networks.RecurrentActorCritic`) take
the same path with two differences, both there so that the update sees exactly the policy that acted
(CleanRL's ``ppo_atari_lstm.py``):

* the collector carries the LSTM state from step to step and rollout to rollout, and stores the state
  the rollout *started* from plus the per-step episode-start flags;
* the update's minibatches are sets of whole environment sequences (all T steps of
  ``num_envs / num_minibatches`` environments), re-unrolled from that stored state with the same
  episode-start masks: truncated backpropagation through time over the rollout.

A tempting shortcut, flat random minibatches of single steps each unrolled from a snapshot of the
LSTM state, feeds each step another trajectory's memory: the re-computed log-probabilities are not
the rollout's and the ratio is not 1 before the first gradient step. ``tests/test_recurrent.py``
shows both facts.

Continuous (``Box``) action spaces take the feed-forward path too, with
:class:`~ppo_course.networks.GaussianActorCritic`: the buffer stores the raw ``(act_dim,)`` samples,
the environment clips what it receives (:mod:`ppo_course.envs.lunar`). With ``norm_obs`` the training
env normalises observations, and the trainer copies its statistics into the agent after every update
(:func:`sync_obs_normalizer`), so evaluations and checkpoints use the statistics of that moment.

**Exact resume.** A checkpoint written between rollouts also holds the collector's state: each training
environment's episode in progress (how it started and the actions since, replayed on resume; see
:mod:`ppo_course.envs.replay`), the vector wrappers' running statistics and the LSTM state, next to the
RNG states. A run stopped after any update and resumed therefore logs the same metrics and ends with the
same weights as the run that was never stopped (``tests/test_resume.py``).

**Several processes.** Under ``torchrun`` every rank runs this same loop on its own environments; the
only differences are a handful of calls into :mod:`ppo_course.distributed` (gradient averaging in
:func:`ppo_update`, the step count over all ranks, rank 0 alone evaluating, logging and checkpointing
every rank's state). With one process those calls do nothing.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from . import distributed
from .advantages import compute_gae
from .buffer import RolloutBuffer
from .checkpoint import (BEST, LATEST, CheckpointError, RunLock, load_checkpoint, open_run_dir, restore_rng_state,
                         rng_state, save_checkpoint)
from .config import ConfigError, PPOConfig
from .envs import make_vector_env, wrapper_attr
from .evaluate import EvalResult, evaluate
from .logging import MetricsLogger
from .losses import explained_variance, ppo_loss
from .networks import build_agent
from .pipelined import PipelinedCollector
from .rollout import RolloutCollector
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
    ``num_envs / env_groups`` environments each, as :func:`make_collector` takes them.

    Raises:
        EnvironmentIdError: ``config.env_id`` is not registered.
    """
    groups = []
    try:
        for _ in range(config.env_groups):
            groups.append(make_vector_env(config.env_id, config.num_envs // config.env_groups,
                                          asynchronous=config.async_envs, norm_reward=config.norm_reward,
                                          gamma=config.gamma, norm_obs=config.norm_obs, **config.env_kwargs))
    except BaseException:
        for group in groups:
            group.close()
        raise
    return groups


def make_collector(env_groups: list, agent: nn.Module, num_steps: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> RolloutCollector | PipelinedCollector:
    """The collector for :func:`make_train_envs`' list: a :class:`RolloutCollector` for one vector env
    (the loop of notebook 04), a :class:`~ppo_course.pipelined.PipelinedCollector` for several."""
    if len(env_groups) == 1:
        return RolloutCollector(env_groups[0], agent, num_steps, device, seed)
    return PipelinedCollector(env_groups, agent, num_steps, device, seed)


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
    """K epochs of shuffled minibatch gradient steps on one rollout (PPO paper, Algorithm 1; CleanRL's ``ppo.py``).

    The loop notebook 07 has the learner write: every epoch a fresh shuffle cut into minibatches;
    per minibatch the PPO loss of the re-scored actions (:func:`ppo_course.losses.ppo_loss`,
    advantages normalised per minibatch when ``config.norm_adv``), ``zero_grad`` / ``backward`` /
    global gradient-norm clip / ``step``; after each epoch, stop early if the epoch's mean
    ``approx_kl`` exceeds ``config.target_kl``. For a rollout of a recurrent agent
    (``buf.initial_lstm_state`` is set) a minibatch is whole environment sequences, re-unrolled
    from the stored initial state with the stored episode-start flags (:func:`minibatch_indices`),
    so before the first gradient step the re-computed log-probabilities are the rollout's.

    Under ``torchrun`` (several ranks, :mod:`ppo_course.distributed`) each rank runs this on its own
    rollout; after ``backward`` the gradients (and the loss) are averaged over the ranks, so every rank
    takes the same step, and the early stop reads the ranks' mean ``approx_kl``. With one process these
    calls return their input.

    Args:
        agent, optimizer: the network and its optimiser (learning rate already set).
        buf: the rollout; advantages, returns: ``(T, N)`` float32 from :func:`compute_gae`.
        config: supplies ``update_epochs``, ``num_minibatches``, ``clip_coef``, ``vf_coef``,
            ``clip_vloss``, ``norm_adv``, ``max_grad_norm``, ``target_kl``.
        ent_coef: entropy coefficient for this update (from the schedule).
        rng: shuffles the batch (or the environments, for a recurrent agent) each epoch.
        update: the update's number, for error messages.
        on_minibatch: optional ``f(epoch, minibatch, ratio)`` hook (tests use it to see that
            the first minibatch's ratio is exactly 1).

    Returns:
        :class:`UpdateStats`: means over the minibatches taken, and the epochs done.

    Raises:
        TrainingDiverged: a minibatch loss is NaN or infinite (no step is taken with it).
        DistributedError: with several ranks (:mod:`ppo_course.distributed`), another rank stopped answering.
        ConfigError: a recurrent rollout whose ``num_envs`` is not divisible by ``num_minibatches``.
    """
    b = buf.flatten(advantages=advantages, returns=returns)  # (T, N, ...) -> (T*N, ...)
    recurrent = buf.initial_lstm_state is not None
    device = b["actions"].device
    per_minibatch = []  # one row of UpdateStats numbers per step, averaged once at the end
    for epoch in range(config.update_epochs):
        epoch_kls = []
        for mb, (idx, env_idx) in enumerate(minibatch_indices(rng, buf.num_steps, buf.num_envs,
                                                              config.num_minibatches, recurrent, device)):
            new = _rescore(agent, buf, b, idx, env_idx)  # log-probs, values, entropies of the current network
            if on_minibatch is not None:
                on_minibatch(epoch, mb, torch.exp(new.logprob - b["logprobs"][idx]).detach())
            loss = ppo_loss(new.logprob, b["logprobs"][idx], b["advantages"][idx], new.value, b["values"][idx],
                            b["returns"][idx], new.entropy, clip_coef=config.clip_coef, vf_coef=config.vf_coef,
                            ent_coef=ent_coef, clip_vloss=config.clip_vloss, norm_adv=config.norm_adv)
            optimizer.zero_grad()
            loss.loss.backward()
            total = distributed.average_gradients(agent.parameters(), loss.loss)  # several ranks: their mean
            if not torch.isfinite(total):
                raise TrainingDiverged(f"non-finite loss ({total.item()}) at update {update}, "
                                       f"epoch {epoch}, minibatch {mb}")  # before any step is taken with it
            grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
            epoch_kls.append(loss.approx_kl)
            per_minibatch.append(torch.stack([loss.policy_loss.detach(), loss.value_loss.detach(),
                                              loss.entropy.detach(), loss.approx_kl, loss.clip_fraction, grad_norm]))
        epoch_kl = distributed.mean_over_ranks(torch.stack(epoch_kls).mean())  # every rank stops together
        if config.target_kl is not None and epoch_kl > config.target_kl:
            break  # the policy has moved far enough from the one that collected the data
    means = distributed.mean_over_ranks(torch.stack(per_minibatch).double().mean(0)).tolist()
    return UpdateStats(*means, explained_variance=explained_variance(b["values"], b["returns"]),
                       epochs_done=epoch + 1)


def _rescore(agent: nn.Module, buf: RolloutBuffer, b: dict[str, torch.Tensor], idx: torch.Tensor,
             env_idx: torch.Tensor | None):
    """The current network's output for one minibatch's stored observations and actions."""
    obs = b["obs"][idx]
    obs = obs if obs.dtype == torch.uint8 else obs.float()
    if env_idx is None:
        return agent.get_action_and_value(obs, b["actions"][idx])
    h0, c0 = buf.initial_lstm_state  # whole sequences, unrolled again from the rollout's first state
    return agent.get_action_and_value(obs, (h0[:, env_idx], c0[:, env_idx]), b["starts"][idx], b["actions"][idx])


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
    #: True when ``should_stop`` asked the run to stop before ``total_timesteps`` (a checkpoint was written)
    stopped_early: bool = False


@dataclass
class _Run:
    """Everything one training run holds between updates (made by :func:`_set_up`)."""

    config: PPOConfig
    run_dir: Path | None
    device: torch.device
    agent: nn.Module
    optimizer: torch.optim.Optimizer
    collector: RolloutCollector | PipelinedCollector
    minibatch_rng: np.random.Generator
    logger: MetricsLogger | None
    lock: RunLock | None = None  #: held on the run directory for the run's lifetime
    global_step: int = 0
    update: int = 0
    best_return: float | None = None
    last_eval: EvalResult | None = None
    last_good: Path | None = None  #: the newest checkpoint written (named when training diverges)
    start_step: int = 0
    start_time: float = field(default_factory=time.perf_counter)
    eval_time: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    recent_returns: deque = field(default_factory=lambda: deque(maxlen=20))

    def close(self) -> None:
        self.collector.close()
        if self.logger:
            self.logger.close()
        if self.lock:
            self.lock.release()


def train(config: PPOConfig, run_dir: str | Path | None = None, resume: bool = False, tensorboard: bool = True,
          progress: bool = True, callback: Callable[[dict[str, float]], None] | None = None,
          restart: bool = False, should_stop: Callable[[], bool] | None = None) -> TrainResult:
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
        restart: ``run_dir`` may hold an earlier run: move it aside (``<run_dir>.old-<date-time>``)
            and start over. Without ``resume`` or ``restart`` a folder that holds a run is refused.
        should_stop: polled after every update; when it returns True the run stops there, after that
            update's metrics row is logged, and writes ``latest.pt`` (the CLI sets it on the first
            Ctrl-C or SIGTERM, so an interrupted run keeps every finished update).
        tensorboard: also write TensorBoard event files.
        progress: show a tqdm progress bar.
        callback: called with each update's metrics row (the live dashboard uses it).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged: a non-finite loss; the last good checkpoint is left untouched.
        CheckpointError: ``resume`` without a usable ``latest.pt`` for this environment.
        RunDirError: ``run_dir`` holds a run (and neither ``resume`` nor ``restart``), is a file,
            or another process is training in it.
        EnvironmentIdError: ``config.env_id`` is not registered.
    """
    config.validate()
    run = _start_run(config, Path(run_dir) if run_dir is not None else None, resume, restart, tensorboard)
    bar = _progress_bar(run, progress)
    phase = "start"  # "rollout" | "update" | "bookkeeping": what an interruption would cut short
    stopped_early = False
    try:
        while run.global_step < config.total_timesteps:
            run.update += 1
            lr, ent_coef = _apply_schedules(run)
            phase = "rollout"
            buf, next_value = run.collector.collect()
            advantages, returns = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations,
                                              next_value, buf.final_values, config.gamma, config.gae_lambda)
            phase = "update"
            stats = _update(run, buf, advantages, returns, ent_coef)
            phase = "bookkeeping"
            row = _finish_update(run, stats, lr, ent_coef)  # metrics row; evaluation and checkpoints when due
            if callback:
                callback(row)
            _show_progress(bar, run, row)
            stop = distributed.any_rank(should_stop is not None and should_stop())  # all ranks stop together
            if stop and run.global_step < config.total_timesteps:
                _save(run, LATEST, _rank_states(run))
                stopped_early = True
                break
    except KeyboardInterrupt:
        _keep_finished_work(run, phase)
        raise
    finally:
        bar.close()
        run.close()
    return TrainResult(run.agent, config, run.run_dir, run.global_step, run.best_return, run.last_eval, run.history,
                       stopped_early)


# -- the phases of train() ----------------------------------------------------------------------------
def _start_run(config: PPOConfig, run_dir: Path | None, resume: bool, restart: bool, tensorboard: bool) -> _Run:
    """Lock the run directory (:func:`~ppo_course.checkpoint.open_run_dir`), then :func:`_set_up`; a set-up
    that fails (e.g. an unknown environment id) releases the lock and leaves no new folder behind."""
    distributed.init(resolve_device(config.device))  # joins torchrun's job; nothing in a single process
    if run_dir is None or not distributed.is_main():  # with several ranks, rank 0 alone owns the run directory
        return _set_up(config, None, resume, tensorboard)
    new_dir = not run_dir.exists()
    lock = open_run_dir(run_dir, resume, restart)
    try:
        run = _set_up(config, run_dir, resume, tensorboard)
    except BaseException:
        lock.release()
        lock.path.unlink(missing_ok=True)
        if new_dir and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    run.lock = lock
    return run


def _set_up(config: PPOConfig, run_dir: Path | None, resume: bool, tensorboard: bool) -> _Run:
    """Seeds, environments, agent, optimiser, collector and logger; from ``run_dir/latest.pt`` when resuming."""
    torch.set_num_threads(config.torch_threads or DEFAULT_TORCH_THREADS)
    device = distributed.device_for_rank(resolve_device(config.device))
    rank, ranks = distributed.rank(), distributed.world_size()
    if ranks > 1 and config.norm_obs:
        raise ConfigError("norm_obs: each rank would normalise the one network's inputs with its own statistics; "
                          "train with one process, or without norm_obs")
    seed_everything(config.seed + rank)  # rank 0 draws what a single process would
    minibatch_rng = np.random.default_rng(config.seed + rank)
    if resume:  # rank 0 reads the run directory; the other ranks get its checkpoint
        ckpt = distributed.from_main(_resume_checkpoint(config, run_dir, device) if rank == 0 else None)
    else:
        ckpt = None
    global_step = ckpt["global_step"] if ckpt else 0

    env_groups = make_train_envs(config)
    envs = env_groups[0]  # the only one when rewards or observations are normalised (config.validate sees to it)
    try:  # Discrete or Box actions; any other space is one ValueError line
        agent = build_agent(config, envs.single_observation_space.shape, envs.single_action_space).to(device)
    except BaseException:
        for group in env_groups:
            group.close()
        raise
    distributed.broadcast_parameters(agent)  # every rank starts from rank 0's initial weights
    # foreach=True: one call per step for all the parameters instead of a Python loop over them (PyTorch's
    # default on GPUs, not on CPUs); the same arithmetic, bit for bit (benchmarks/RESULTS.md, 2026-11-27).
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5, foreach=True)
    if ckpt:
        agent.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    exact = ckpt is not None and _replayable(ckpt, config, ranks)
    # rank r plays environments seed + r * num_envs + j. An exact resume replays their saved episodes;
    # otherwise they start over from new seeds.
    seed = config.seed + rank * config.num_envs + (global_step if ckpt and not exact else 0)
    collector = make_collector(env_groups, agent, config.num_steps, device, seed=seed)
    if ckpt:
        mine = _rank_entry(ckpt, rank)
        try:
            _resume_environments(ckpt, mine, collector, envs, exact)
        except BaseException:
            collector.close()
            raise
        if exact or rank == 0:  # last: nothing above may draw from the restored generators
            restore_rng_state(mine["rng"], minibatch_rng)

    logger = MetricsLogger(run_dir, tensorboard, resume_step=global_step if ckpt else None) if run_dir else None
    if logger and not ckpt:
        logger.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.to_dict().items()))
    last_good = (run_dir / LATEST) if (run_dir and (run_dir / LATEST).exists()) else None
    return _Run(config, run_dir, device, agent, optimizer, collector, minibatch_rng, logger,
                global_step=global_step, update=ckpt["update"] if ckpt else 0,
                best_return=ckpt["best_return"] if ckpt else None, last_good=last_good, start_step=global_step)


def _resume_checkpoint(config: PPOConfig, run_dir: Path | None, device: torch.device) -> dict:
    """``run_dir/latest.pt``, checked to belong to this environment."""
    if run_dir is None:
        raise CheckpointError("resume needs a run directory")
    ckpt = load_checkpoint(run_dir / LATEST, map_location=device)
    if ckpt["config"]["env_id"] != config.env_id:
        raise CheckpointError(f"{run_dir / LATEST} was trained on {ckpt['config']['env_id']}, not {config.env_id}")
    saved_config = PPOConfig.from_dict(ckpt["config"])  # fields newer than the checkpoint take their defaults
    saved = {**saved_config.to_dict(), **{f"env_kwargs.{k}": v for k, v in saved_config.env_kwargs.items()}}
    now = {**config.to_dict(), **{f"env_kwargs.{k}": v for k, v in config.env_kwargs.items()}}
    changed = [f"{name} {saved.get(name)!r} -> {now.get(name)!r}" for name in _SHAPE_FIELDS
               if saved.get(name) != now.get(name)]
    if changed:
        raise CheckpointError(f"{run_dir / LATEST} holds a network of another shape ({', '.join(changed)}): resume "
                              "without changing these, or train into a new run directory")
    return ckpt


def _replayable(ckpt: dict, config: PPOConfig, ranks: int) -> bool:
    """True when ``ckpt`` holds the environments' state of as many ranks as there are now, built as now."""
    saved = PPOConfig.from_dict(ckpt["config"])
    return ("collector" in ckpt and 1 + len(ckpt.get("other_ranks", [])) == ranks
            and all(getattr(saved, name) == getattr(config, name) for name in _ENV_FIELDS))


def _rank_entry(ckpt: dict, rank: int) -> dict:
    """Rank ``rank``'s ``{"rng", "collector"}`` in a checkpoint (rank 0's are the top-level entries)."""
    if rank == 0 or rank > len(ckpt.get("other_ranks", [])):
        return {"rng": ckpt["rng"], "collector": ckpt.get("collector")}
    return ckpt["other_ranks"][rank - 1]


#: Settings that decide how the training environments are built: an exact resume needs them unchanged.
_ENV_FIELDS = ("env_id", "env_kwargs", "num_envs", "env_groups", "norm_reward", "norm_obs", "gamma")


def _resume_environments(ckpt: dict, mine: dict, collector: RolloutCollector | PipelinedCollector, envs,
                         exact: bool) -> None:
    """Put the training environments back where the checkpoint left them.

    ``exact``: every episode in progress is replayed and the wrappers' running state restored
    (:meth:`RolloutCollector.load_state_dict`), so the run continues as the uninterrupted one would.
    Otherwise (a checkpoint written by an older version or by an interrupt in mid-rollout, or changed
    environment settings or number of ranks) only the normalisers' statistics are restored and a warning
    says that the episodes in progress started over.
    """
    if exact:
        diverged = collector.load_state_dict(mine["collector"])
        if diverged:
            warnings.warn(f"resume: replaying the episodes in progress did not reproduce environment(s) {diverged} "
                          "(is the simulator deterministic?); they continue from the replayed state, so the run "
                          "will differ from an uninterrupted one", RuntimeWarning, stacklevel=3)
        return
    for key, attr in (("reward_rms", "return_rms"), ("obs_rms", "obs_rms")):  # the normalisers' statistics
        rms = wrapper_attr(envs, attr)
        if key in ckpt and rms is not None:
            for stat, value in ckpt[key].items():
                setattr(rms, stat, value)
    warnings.warn("resume: the episodes in progress start over (the checkpoint does not hold the environments' "
                  "state, or their settings changed), so the run will differ from an uninterrupted one",
                  RuntimeWarning, stacklevel=3)


#: Settings that decide the network's shape (or its input's): a resumed run cannot change them.
_SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "shared_trunk", "use_lstm", "lstm_hidden_size", "norm_obs",
                 "env_kwargs.frame_stack", "env_kwargs.resolution")


def _apply_schedules(run: _Run) -> tuple[float, float]:
    """This update's learning rate (set on the optimiser) and entropy coefficient."""
    config = run.config
    lr = annealed_lr(config.learning_rate, run.global_step, config.total_timesteps, config.anneal_lr)
    ent_coef = entropy_coef(run.global_step, config.total_timesteps, config.ent_coef, config.ent_coef_final,
                            config.ent_warmup_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr, ent_coef


def _update(run: _Run, buf: RolloutBuffer, advantages: torch.Tensor, returns: torch.Tensor,
            ent_coef: float) -> UpdateStats:
    """:func:`ppo_update`, with a divergence message that names the last good checkpoint."""
    try:
        return ppo_update(run.agent, run.optimizer, buf, advantages, returns, run.config, ent_coef,
                          run.minibatch_rng, run.update)
    except TrainingDiverged as exc:
        where = f"last good checkpoint: {run.last_good}" if run.last_good else "no checkpoint was written yet"
        raise TrainingDiverged(f"{exc}; training stopped, {where}") from None


def _finish_update(run: _Run, stats: UpdateStats, lr: float, ent_coef: float) -> dict[str, float]:
    """Count the steps, make the update's metrics row, evaluate and checkpoint when due, and log the row."""
    config, ranks = run.config, distributed.world_size()
    prev_step, run.global_step = run.global_step, run.global_step + config.batch_size * ranks  # over all ranks
    sync_obs_normalizer(run.agent, run.collector.envs)  # evaluations and checkpoints see the statistics of now
    returns, lengths, episode_stats = _episodes(run)
    run.recent_returns.extend(returns)
    elapsed = time.perf_counter() - run.start_time
    row: dict[str, float] = {
        "global_step": run.global_step, "update": run.update, "time_s": round(elapsed, 3),
        "charts/learning_rate": lr, "charts/ent_coef": ent_coef,
        "charts/sps": (run.global_step - run.start_step) / max(elapsed - run.eval_time, 1e-9),  # evaluation excluded
        "rollout/episodic_return": _mean(returns), "rollout/episodic_length": _mean(lengths),
        **stats.metrics(),
    }
    if ranks > 1:
        row["ranks"] = ranks
    for key in ("kills", "max_progress", "success", "native_return"):  # Doom's episode statistics
        if episode_stats and key in episode_stats[0]:
            row[f"rollout/{key}"] = _mean([s[key] for s in episode_stats])
    due = config.eval_interval > 0 and run.global_step // config.eval_interval > prev_step // config.eval_interval
    if due or run.global_step >= config.total_timesteps:
        row.update(_evaluate_and_checkpoint(run))
    row["charts/eval_time_s"] = round(run.eval_time, 3)
    run.history.append(row)
    if run.logger:
        run.logger.log(row)
    return row


def _episodes(run: _Run) -> tuple[list[float], list[int], list[dict[str, float]]]:
    """Returns, lengths and statistics of the episodes that ended in this rollout, on every rank (on rank 0;
    the other ranks keep their own)."""
    c = run.collector
    parts = distributed.gather_to_main((c.episode_returns, c.episode_lengths, c.episode_stats)) or [
        (c.episode_returns, c.episode_lengths, c.episode_stats)]
    return tuple([x for part in parts for x in part[i]] for i in range(3))


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _evaluate_and_checkpoint(run: _Run) -> dict[str, float]:
    """Evaluate on fixed-seed episodes (rank 0); write ``best.pt`` on a new best mean return, and ``latest.pt``."""
    config, metrics, is_best = run.config, {}, False
    if distributed.is_main():
        start = time.perf_counter()
        try:
            run.last_eval = evaluate(run.agent, config.env_id, config.eval_episodes,
                                     deterministic=not config.eval_stochastic,
                                     success_threshold=config.success_threshold, device=run.device,
                                     env_kwargs=config.env_kwargs)
        finally:
            run.eval_time += time.perf_counter() - start
        is_best = run.best_return is None or run.last_eval.mean_return > run.best_return
        run.best_return = run.last_eval.mean_return if is_best else run.best_return
        metrics = run.last_eval.metrics()
    states = _rank_states(run)  # after the evaluation, which may have drawn from the RNGs
    if is_best:
        _save(run, BEST, states)
    run.last_good = _save(run, LATEST, states) or run.last_good
    return metrics


def _state(run: _Run, with_collector: bool = True) -> dict:
    """What this rank needs to continue exactly: its RNG states and, taken between rollouts, its collector's state."""
    state = {"rng": rng_state(run.minibatch_rng)}
    if with_collector:
        state["collector"] = run.collector.state_dict()
    return state


def _rank_states(run: _Run) -> list[dict] | None:
    """Every rank's :func:`_state`, gathered on rank 0 (None elsewhere); a collective, so every rank calls it."""
    if run.run_dir is None and not distributed.active():
        return None  # nothing will be written
    return distributed.gather_to_main(_state(run))


def _save(run: _Run, name: str, states: list[dict] | None) -> Path | None:
    """Write checkpoint ``name`` atomically into the run directory (nothing without one, or on ranks > 0).

    ``states`` (:func:`_rank_states`): rank 0's RNG states and collector state -- the environments'
    episodes in progress, their wrappers' running state, the LSTM state -- go in at the top level, the
    other ranks' in ``other_ranks``, so that ``resume`` continues exactly."""
    if run.run_dir is None or states is None:
        return None
    envs = run.collector.envs  # the agent's observation normaliser was synced when its update finished
    payload = {"model": run.agent.state_dict(), "optimizer": run.optimizer.state_dict(),
               "config": run.config.to_dict(), "global_step": run.global_step, "update": run.update,
               "best_return": run.best_return, "obs_shape": tuple(envs.single_observation_space.shape),
               **_action_space_entry(envs.single_action_space), **states[0]}
    for key, attr in (("reward_rms", "return_rms"), ("obs_rms", "obs_rms")):  # the normalisers' running statistics
        rms = wrapper_attr(envs, attr)
        if rms is not None:
            payload[key] = {"mean": rms.mean, "var": rms.var, "count": rms.count}
    if len(states) > 1:
        payload["other_ranks"] = states[1:]
    return save_checkpoint(run.run_dir / name, payload)


def _action_space_entry(space: gym.Space) -> dict[str, int]:
    """How a checkpoint records the action space: ``{"n_actions": n}`` (Discrete) or ``{"act_dim": d}`` (Box)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"n_actions": int(space.n)}
    return {"act_dim": int(space.shape[0])}


def _action_space_of(ckpt: dict) -> gym.Space:
    """The action space a checkpoint's agent was built for (the inverse of :func:`_action_space_entry`).

    A Box's bounds are not needed: the agent's actions are unbounded and the environment clips them.
    """
    if "act_dim" in ckpt:
        return gym.spaces.Box(-np.inf, np.inf, (ckpt["act_dim"],), np.float32)
    return gym.spaces.Discrete(ckpt["n_actions"])


def sync_obs_normalizer(agent: nn.Module, envs) -> None:
    """Copy the training env's running observation statistics into the agent's
    :class:`~ppo_course.networks.ObsNormalizer`, the frozen copy its ``act`` applies to raw observations.
    Nothing happens unless both exist (``config.norm_obs``)."""
    normalizer, rms = getattr(agent, "obs_normalizer", None), wrapper_attr(envs, "obs_rms")
    if normalizer is not None and rms is not None:
        normalizer.set_statistics(rms.mean, rms.var, rms.count)


def _keep_finished_work(run: _Run, phase: str) -> None:
    """On Ctrl-C: outside the gradient steps the weights are those of a finished update, a consistent state
    worth keeping; interrupted mid-update, the previous checkpoint stays as it is."""
    if phase == "rollout":
        run.update -= 1  # this update never happened
    if phase != "update" and run.run_dir is not None and run.global_step > run.start_step and distributed.is_main():
        # no collective here (another rank may be gone); mid-rollout the environments are past the update
        _save(run, LATEST, [_state(run, with_collector=phase != "rollout" and not distributed.active())])


def _progress_bar(run: _Run, progress: bool):
    from tqdm.auto import tqdm

    total = run.config.total_timesteps
    return tqdm(total=total, initial=min(run.global_step, total), unit="step", dynamic_ncols=True,
                disable=not progress or not distributed.is_main(), desc=run.config.env_id)


def _show_progress(bar, run: _Run, row: dict[str, float]) -> None:
    postfix = {"return": f"{np.mean(run.recent_returns):.1f}" if run.recent_returns else "-",
               "sps": f"{row['charts/sps']:.0f}"}
    if run.last_eval is not None:
        postfix["eval"] = f"{run.last_eval.mean_return:.1f}"
    bar.set_postfix(postfix, refresh=False)
    bar.update(min(run.global_step, run.config.total_timesteps) - bar.n)


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, PPOConfig]:
    """Rebuild the agent and its config from a checkpoint file.

    An agent trained with ``norm_obs`` comes back with its :class:`~ppo_course.networks.ObsNormalizer`
    holding the run's statistics: its ``act`` takes raw observations (evaluation, ``play``, notebooks).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the saved architecture.
    """
    ckpt = load_checkpoint(path, map_location=device)
    config = PPOConfig.from_dict(ckpt["config"])
    agent = build_agent(config, tuple(ckpt["obs_shape"]), _action_space_of(ckpt)).to(device)
    try:
        agent.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the saved architecture ({exc})") from None
    agent.eval()
    return agent, config
