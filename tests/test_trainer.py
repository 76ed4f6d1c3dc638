"""Real short runs of the trainer: ratio = 1 at the start of an update, determinism, resume, divergence."""

import math
import numpy as np
import pytest
import torch

from ppo_course import PPOConfig, TrainingDiverged, train
from ppo_course.advantages import compute_gae
from ppo_course.checkpoint import LATEST, load_checkpoint
from ppo_course.envs import make_vector_env
from ppo_course.logging import METRIC_KEYS, read_metrics
from ppo_course.networks import build_agent
from ppo_course.trainer import RolloutCollector, ppo_update


def _rollout(config):
    torch.manual_seed(config.seed)
    envs = make_vector_env(config.env_id, config.num_envs)
    agent = build_agent(config, envs.single_observation_space.shape, envs.single_action_space)
    collector = RolloutCollector(envs, agent, config.num_steps, seed=config.seed)
    buf, next_value = collector.collect()
    return envs, agent, buf, next_value


def test_first_minibatch_ratio_is_exactly_one(tiny_config):
    config = tiny_config.replace(update_epochs=2)
    envs, agent, buf, next_value = _rollout(config)
    adv, ret = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations, next_value,
                           buf.final_values, config.gamma, config.gae_lambda)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    ratios = {}
    ppo_update(agent, optimizer, buf, adv, ret, config, config.ent_coef, np.random.default_rng(0),
               on_minibatch=lambda epoch, mb, ratio: ratios.setdefault((epoch, mb), ratio))
    assert torch.equal(ratios[(0, 0)], torch.ones_like(ratios[(0, 0)]))  # nothing has changed yet
    assert not torch.allclose(ratios[(1, 0)], torch.ones_like(ratios[(1, 0)]))  # later ones have moved
    envs.close()


@pytest.mark.parametrize("target_kl, epochs", [(None, 3), (1e9, 3), (1e-12, 1)])
def test_target_kl_stops_the_epochs_after_the_first_that_moved_too_far(tiny_config, target_kl, epochs):
    config = tiny_config.replace(update_epochs=3, target_kl=target_kl)
    envs, agent, buf, next_value = _rollout(config)
    adv, ret = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations, next_value,
                           buf.final_values, config.gamma, config.gae_lambda)
    seen = set()
    stats = ppo_update(agent, torch.optim.Adam(agent.parameters(), lr=1e-3), buf, adv, ret, config,
                       config.ent_coef, np.random.default_rng(0), on_minibatch=lambda e, mb, r: seen.add((e, mb)))
    assert stats.epochs_done == epochs
    assert seen == {(e, mb) for e in range(epochs) for mb in range(config.num_minibatches)}  # whole epochs only
    envs.close()


def test_rollout_shapes_are_time_major(tiny_config):
    envs, _, buf, next_value = _rollout(tiny_config)
    T, N = tiny_config.num_steps, tiny_config.num_envs
    assert buf.obs.shape == (T, N, 8) and buf.actions.shape == (T, N) and next_value.shape == (N,)
    assert buf.flatten()["obs"].shape == (T * N, 8)
    envs.close()


def test_truncated_steps_get_a_final_value():
    config = PPOConfig.from_presets(["debug"], env_id="CartPole-v1", num_envs=2, num_steps=600, num_minibatches=2)
    envs, agent, buf, _ = _rollout(config)
    # CartPole is truncated at 500 steps; with an untrained agent episodes terminate much earlier,
    # so force truncations by checking the bookkeeping wherever one happened.
    trunc = buf.truncations.bool()
    assert torch.all(buf.final_values[~trunc] == 0)
    envs.close()


def test_same_seed_gives_identical_metrics(tiny_config):
    a = train(tiny_config, None, progress=False)
    b = train(tiny_config, None, progress=False)
    keys = [k for k in METRIC_KEYS if k.startswith(("train/", "eval/", "rollout/"))]

    def numbers(result):
        return np.array([[row.get(k, np.nan) for k in keys] for row in result.history])

    assert np.isfinite(numbers(a)).sum() > 10
    np.testing.assert_array_equal(numbers(a), numbers(b))  # NaN == NaN here; everything else bit-for-bit
    c = train(tiny_config.replace(seed=1), None, progress=False)
    assert [row["train/value_loss"] for row in c.history] != [row["train/value_loss"] for row in a.history]


def test_resume_refuses_a_network_of_another_shape_naming_the_setting(tiny_config, tmp_path):
    from ppo_course.checkpoint import CheckpointError

    short = tiny_config.replace(total_timesteps=512, eval_interval=512)
    train(short, tmp_path, progress=False, tensorboard=False)
    with pytest.raises(CheckpointError, match=r"another shape \(hidden_size 64 -> 32\)"):
        train(short.replace(hidden_size=32, total_timesteps=1024), tmp_path, resume=True, progress=False,
              tensorboard=False)
    assert load_checkpoint(tmp_path / LATEST)["global_step"] == 512  # the run is untouched


def test_resume_continues_to_the_same_step_with_optimizer_state(tiny_config, tmp_path):
    short = tiny_config.replace(total_timesteps=1024, eval_interval=512)
    first = train(short, tmp_path, progress=False, tensorboard=False)
    assert first.global_step == 1024
    saved = load_checkpoint(tmp_path / LATEST)
    assert saved["global_step"] == 1024 and saved["optimizer"]["state"]  # Adam moments are stored
    assert saved["reward_rms"]["count"] > 1  # and the reward normaliser's running statistics

    resumed = train(tiny_config, tmp_path, resume=True, progress=False, tensorboard=False)
    assert resumed.global_step == tiny_config.total_timesteps == 2048
    rows = read_metrics(tmp_path)
    assert rows["global_step"] == sorted(rows["global_step"])
    assert rows["global_step"][-1] == 2048 and len(rows["global_step"]) == 2048 // tiny_config.batch_size
    # the optimiser carried on from its stored state instead of starting fresh
    final = load_checkpoint(tmp_path / LATEST)
    steps = [s["step"] for s in final["optimizer"]["state"].values()]
    assert all(int(s) == 2048 // tiny_config.batch_size * tiny_config.update_epochs * tiny_config.num_minibatches
               for s in steps)


def test_a_short_real_run_writes_its_files(tiny_config, tmp_path):
    result = train(tiny_config, tmp_path, progress=False)
    for name in ("metrics.csv", "latest.pt", "best.pt"):
        assert (tmp_path / name).is_file(), name
    assert list(tmp_path.glob("events.out.tfevents*"))
    rows = read_metrics(tmp_path)
    for key in ("train/policy_loss", "train/value_loss", "train/entropy", "train/approx_kl", "train/clip_fraction",
                "train/explained_variance", "eval/mean_return", "eval/success_rate", "charts/learning_rate",
                "charts/sps"):
        assert key in rows, key
    assert np.isfinite(rows["eval/mean_return"][-1])
    assert result.last_eval is not None and len(result.last_eval.returns) == tiny_config.eval_episodes


def test_divergence_stops_with_the_update_and_last_checkpoint(tiny_config, tmp_path, monkeypatch):
    import ppo_course.trainer as trainer

    real = trainer.ppo_loss
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 40:  # after the first checkpoint (debug: 8 minibatch steps per update)
            return out._replace(loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(trainer, "ppo_loss", exploding)
    with pytest.raises(TrainingDiverged, match=r"update \d+.*last good checkpoint: .*latest.pt"):
        train(tiny_config, tmp_path, progress=False, tensorboard=False)
    assert load_checkpoint(tmp_path / LATEST)["global_step"] > 0  # the good checkpoint survived


def test_interrupt_during_rollout_keeps_a_consistent_latest_checkpoint(tiny_config, tmp_path, monkeypatch):
    real = RolloutCollector.collect
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(RolloutCollector, "collect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config.replace(eval_interval=0), tmp_path, progress=False, tensorboard=False)
    saved = load_checkpoint(tmp_path / LATEST)
    assert saved["update"] == 2 and saved["global_step"] == 2 * tiny_config.batch_size


def test_async_vector_envs_train_too(tiny_config):
    result = train(tiny_config.replace(async_envs=True, total_timesteps=256, eval_interval=0, eval_episodes=1),
                   None, progress=False)
    assert result.global_step == 256 and np.isfinite(result.history[-1]["train/value_loss"])


def test_training_in_two_env_groups(tiny_config):
    """env_groups = 2: the trainer makes two vector envs, steps one in a background thread, and closes both."""
    from ppo_course.trainer import make_collector, make_train_envs

    config = tiny_config.replace(env_groups=2, norm_reward=False, total_timesteps=2 * tiny_config.batch_size,
                                 eval_interval=0,
                                 eval_episodes=1)
    groups = make_train_envs(config) + make_train_envs(config.replace(env_groups=1))
    assert [g.num_envs for g in groups] == [config.num_envs // 2] * 2 + [config.num_envs]
    for g in groups:
        g.close()
    result = train(config, None, progress=False, tensorboard=False)
    assert result.global_step == config.total_timesteps and np.isfinite(result.history[-1]["train/value_loss"])
    threads = torch.get_num_threads()
    try:  # a grouped rollout runs PyTorch on one thread and gives the setting back afterwards
        torch.set_num_threads(2)
        collector = make_collector(make_train_envs(config), result.agent, num_steps=8)
        collector.collect()
        assert torch.get_num_threads() == 2
        collector.close()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("score_after_rollout", [False, True])
def test_the_collector_takes_a_network_that_returns_a_plain_tuple(score_after_rollout):
    """ex05 plugs the learner's own network in; it may return (action, logprob, entropy, value) as a tuple."""
    from ppo_course.networks import MLPActorCritic

    class PlainTuple(MLPActorCritic):
        def get_action_and_value(self, x, action=None):
            return tuple(super().get_action_and_value(x, action))

    agent = PlainTuple(4, 2)
    agent.score_after_rollout = score_after_rollout
    buf, next_value = RolloutCollector(make_vector_env("CartPole-v1", 2), agent, num_steps=8).collect()
    assert buf.actions.shape == (8, 2) and buf.logprobs.shape == (8, 2) and next_value.shape == (2,)


def test_scoring_after_the_rollout_gives_the_per_step_numbers():
    """The MLP agent's rollout samples per step and scores afterwards; a per-step scoring agent with the same
    weights and seeds must see the same actions and rewards, and the same log-probs and values to float rounding."""
    from ppo_course.networks import MLPActorCritic

    buffers = []
    for score_after_rollout in (True, False):
        torch.manual_seed(0)
        agent = MLPActorCritic(4, 2)
        agent.score_after_rollout = score_after_rollout
        envs = make_vector_env("CartPole-v1", 4)
        buffers.append(RolloutCollector(envs, agent, num_steps=64, seed=0).collect()[0])
        envs.close()
    after, per_step = buffers
    assert after.terminations.sum() > 0  # episodes ended inside the rollout
    for name in ("actions", "rewards", "terminations", "obs"):
        assert torch.equal(getattr(after, name), getattr(per_step, name)), name
    for name in ("logprobs", "values"):
        assert torch.allclose(getattr(after, name), getattr(per_step, name), atol=1e-6), name


def test_metrics_csv_grows_a_column_for_a_metric_that_appears_later(tmp_path):
    """Doom runs add rollout/kills, eval/max_progress, ...: they must reach metrics.csv, not only TensorBoard."""
    from ppo_course.logging import MetricsLogger, read_metrics

    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log({"global_step": 1, "train/entropy": 1.0})
        logger.log({"global_step": 2, "train/entropy": 0.9, "rollout/kills": 3.0})
    data = read_metrics(tmp_path)
    assert data["train/entropy"] == [1.0, 0.9]
    assert math.isnan(data["rollout/kills"][0]) and data["rollout/kills"][1] == 3.0
    with MetricsLogger(tmp_path, tensorboard=False, resume_step=2) as logger:  # resuming keeps the extra column
        logger.log({"global_step": 3, "train/entropy": 0.8})
    assert read_metrics(tmp_path)["rollout/kills"][1:] == [3.0, pytest.approx(float("nan"), nan_ok=True)]


def test_a_failed_metrics_rewrite_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """MetricsLogger rewrites metrics.csv through a temporary file: a crash mid-rewrite keeps the old rows."""
    import csv

    from ppo_course.logging import MetricsLogger, read_metrics

    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        for step in (64, 128):
            logger.log({"global_step": step, "train/value_loss": 1.0})
    before = (tmp_path / "metrics.csv").read_bytes()

    def crash(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(csv.DictWriter, "writerows", crash)
    with pytest.raises(OSError):
        MetricsLogger(tmp_path, tensorboard=False, resume_step=128)  # a resume rewrites the file
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert read_metrics(tmp_path)["global_step"] == [64.0, 128.0]
    assert not list(tmp_path.glob("*.tmp"))
