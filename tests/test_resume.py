"""Exact resume: a run stopped after any update and resumed gives the uninterrupted run's metrics and weights.

A stop asked for during the rollout, the update or the evaluation of update k ends the run after update k
(the CLI's first Ctrl-C does this through ``should_stop``); ``resume`` must then replay the environments'
episodes in progress, restore the wrappers' running statistics, the LSTM state and every RNG, so that every
column of ``metrics.csv`` except the wall-clock ones and the final weights are those of the run that was
never stopped.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ppo_course.trainer as trainer
from ppo_course import PPOConfig, train
from ppo_course.checkpoint import LATEST, load_checkpoint, save_checkpoint
from ppo_course.envs import make_vector_env
from ppo_course.envs.replay import episode_logs, load_vector_env_state, replay_episodes, vector_env_state
from ppo_course.logging import read_metrics
from ppo_course.networks import RecurrentActorCritic
from ppo_course.pipelined import PipelinedCollector
from ppo_course.rollout import RolloutCollector

WALL_CLOCK = ("time_s", "charts/sps", "charts/eval_time_s")


def _same_metrics(a, b):
    rows_a, rows_b = read_metrics(a), read_metrics(b)
    assert set(rows_a) == set(rows_b)
    for key in rows_a:
        if key not in WALL_CLOCK:
            np.testing.assert_array_equal(rows_a[key], rows_b[key], err_msg=key)


def _same_weights(a, b):
    wa, wb = load_checkpoint(a / LATEST)["model"], load_checkpoint(b / LATEST)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _stop_during(monkeypatch, phase: str, update: int) -> list[bool]:
    """A flag raised while ``phase`` of update ``update`` runs (as the CLI's Ctrl-C handler raises it)."""
    flag, calls = [False], [0]
    targets = {"rollout": [(RolloutCollector, "collect"), (PipelinedCollector, "collect")],
               "update": [(trainer, "ppo_update")], "evaluation": [(trainer, "evaluate")]}[phase]

    def raising(original):
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] == update:
                flag[0] = True
            return original(*args, **kwargs)
        return call

    for owner, name in targets:
        monkeypatch.setattr(owner, name, raising(getattr(owner, name)))
    return flag


def _interrupted_and_resumed(config, run_dir, monkeypatch, phase, at):
    with monkeypatch.context() as patch:
        flag = _stop_during(patch, phase, at)
        stopped = train(config, run_dir, progress=False, tensorboard=False, should_stop=lambda: flag[0])
    assert stopped.stopped_early
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an exact resume has nothing to warn about
        resumed = train(config, run_dir, resume=True, progress=False, tensorboard=False)
    assert resumed.global_step == config.total_timesteps
    return stopped


@pytest.fixture(scope="module")
def lunar_reference(tmp_path_factory):
    config = PPOConfig.from_presets(["debug"], env_id="LunarLander-v3", total_timesteps=1280, eval_interval=512)
    run_dir = tmp_path_factory.mktemp("lunar-uninterrupted")
    train(config, run_dir, progress=False, tensorboard=False)
    return config, run_dir


@pytest.mark.parametrize("phase, at", [("rollout", 2), ("update", 3), ("evaluation", 2)])
def test_lunar_run_stopped_and_resumed_equals_the_uninterrupted_run(lunar_reference, tmp_path, monkeypatch,
                                                                    phase, at):
    config, reference = lunar_reference
    _interrupted_and_resumed(config, tmp_path, monkeypatch, phase, at)
    _same_metrics(tmp_path, reference)
    _same_weights(tmp_path, reference)


def test_continuous_run_with_observation_normalisation_resumes_exactly(tmp_path, monkeypatch):
    config = PPOConfig.from_presets(["debug"], env_id="Pendulum-v1", total_timesteps=768, eval_interval=0,
                                    eval_episodes=1)
    assert config.norm_obs and config.norm_reward
    train(config, tmp_path / "reference", progress=False, tensorboard=False)
    _interrupted_and_resumed(config, tmp_path / "resumed", monkeypatch, "update", 2)
    _same_metrics(tmp_path / "resumed", tmp_path / "reference")
    _same_weights(tmp_path / "resumed", tmp_path / "reference")


def test_doom_run_with_lstm_and_env_groups_resumes_exactly(tmp_path, monkeypatch, capsys):
    base = PPOConfig.from_presets(["debug"], env_id="doom:basic")
    assert base.use_lstm and not base.norm_reward and base.num_envs % base.num_minibatches == 0
    config = base.replace(num_envs=2, num_steps=16, total_timesteps=96, eval_interval=0, eval_episodes=1,
                          env_kwargs={**base.env_kwargs, "frame_stack": 2})
    assert config.env_groups == 2  # the pipelined collector, two groups of one game
    reference = train(config, tmp_path / "reference", progress=False, tensorboard=False)
    assert isinstance(reference.agent, RecurrentActorCritic) and np.isfinite(reference.history[-1]["train/value_loss"])
    assert -1000 < reference.last_eval.mean_return < 100  # native units (-1 per tic, -5 per shot), not scaled
    _interrupted_and_resumed(config, tmp_path / "resumed", monkeypatch, "rollout", 1)
    _same_metrics(tmp_path / "resumed", tmp_path / "reference")
    _same_weights(tmp_path / "resumed", tmp_path / "reference")
    # `play` builds the run's own environment (two stacked frames here, not the default four)
    from ppo_course.cli import main

    assert main(["play", "--logdir", str(tmp_path / "resumed"), "--episodes", "1"]) == 0
    assert "episode 1: return" in capsys.readouterr().out


@pytest.mark.parametrize("env_id, asynchronous", [("LunarLander-v3", False), ("LunarLander-v3", True),
                                                   ("BipedalWalker-v3", False)])
def test_replay_rebuilds_environments_mid_episode(env_id, asynchronous):
    """The mechanism on its own: logs and wrapper state taken mid-episode, replayed into fresh envs seeded
    differently, give the same observations, rewards and ends from then on. BipedalWalker needs a fresh
    Box2D world per episode for this (FreshWorldEachEpisode): in the world it keeps by default, the
    replayed episode drifts apart within a few steps."""
    rng = np.random.default_rng(0)
    first = make_vector_env(env_id, 3, asynchronous=asynchronous, norm_reward=True)
    space = first.action_space
    act = (lambda: rng.integers(0, 4, 3)) if env_id.startswith("Lunar") else (lambda: rng.uniform(-1, 1, space.shape))
    first.reset(seed=1)
    for _ in range(150):
        first.step(act())
    logs, state = episode_logs(first), vector_env_state(first)
    assert all(len(log["actions"]) > 0 for log in logs)  # mid-episode, some after an autoreset
    second = make_vector_env(env_id, 3, asynchronous=asynchronous, norm_reward=True)
    second.reset(seed=99)
    assert replay_episodes(second, logs) == []
    load_vector_env_state(second, state)
    for _ in range(200):
        actions = act()
        for a, b in zip(first.step(actions)[:4], second.step(actions)[:4]):
            np.testing.assert_array_equal(a, b)
    first.close()
    second.close()


def test_an_old_checkpoint_without_environment_state_resumes_with_a_warning(tmp_path):
    config = PPOConfig.from_presets(["debug"], env_id="LunarLander-v3", total_timesteps=256, eval_interval=128)
    train(config, tmp_path, progress=False, tensorboard=False)
    ckpt = load_checkpoint(tmp_path / LATEST)
    del ckpt["collector"]
    save_checkpoint(tmp_path / LATEST, ckpt)
    with pytest.warns(RuntimeWarning, match="episodes in progress start over"):
        resumed = train(config.replace(total_timesteps=512), tmp_path, resume=True, progress=False,
                        tensorboard=False)
    assert resumed.global_step == 512


def test_ctrl_c_then_resume_on_the_command_line_equals_the_uninterrupted_run(tmp_path):
    """As a user does it: Ctrl-C at whatever moment a real run has reached, then ``--resume``."""
    import signal
    import subprocess
    import sys

    from test_cli import CLI, _wait_for_rows, run

    args = ["train", "--env", "LunarLander-v3", "--preset", "debug", "--seed", "3", "--total-timesteps", "3072",
            "--eval-interval", "1024", "--eval-episodes", "1", "--no-progress"]
    config = PPOConfig.from_presets(["debug"], env_id="LunarLander-v3", seed=3, total_timesteps=3072,
                                    eval_interval=1024, eval_episodes=1)  # the same run, in this process
    train(config, tmp_path / "reference", progress=False)
    proc = subprocess.Popen([*CLI, *args, "--logdir", str(tmp_path / "resumed")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_rows(tmp_path / "resumed", proc, 2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    resumed = run("train", "--logdir", tmp_path / "resumed", "--resume", "--no-progress")
    assert resumed.returncode == 0 and "warning" not in resumed.stderr, resumed.stderr
    _same_metrics(tmp_path / "resumed", tmp_path / "reference")
    _same_weights(tmp_path / "resumed", tmp_path / "reference")
