"""Continuous (Box) actions: the Gaussian agent, clipping in the environment, observation normalisation
from the training env to the checkpoint and back, and a real Pendulum-v1 run through train, eval and play."""

import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Normal

from ppo_course import PPOConfig, evaluate, load_agent, train
from ppo_course.advantages import compute_gae
from ppo_course.checkpoint import BEST, LATEST, CheckpointError, load_checkpoint
from ppo_course.config import ENV_DEFAULTS
from ppo_course.envs import check_env_id, make_env, make_vector_env, wrapper_attr
from ppo_course.envs.lunar import NormalizeObservation
from ppo_course.evaluate import agent_policy
from ppo_course.networks import GaussianActorCritic, MLPActorCritic, ObsNormalizer, build_agent
from ppo_course.trainer import RolloutCollector, ppo_update

CLI = [sys.executable, "-m", "ppo_course.cli"]
CONTINUOUS_ENVS = ("Pendulum-v1", "LunarLanderContinuous-v3", "BipedalWalker-v3")


def pendulum_config(**overrides):
    return PPOConfig.from_presets(["debug"], env_id="Pendulum-v1", **overrides)


# -- the Gaussian agent ---------------------------------------------------------------------------------
def test_log_prob_and_entropy_are_those_of_a_diagonal_normal():
    torch.manual_seed(0)
    agent = GaussianActorCritic(3, 2)
    with torch.no_grad():  # mean = the head's bias whatever the input: known numbers
        agent.actor_head.weight.zero_()
        agent.actor_head.bias.copy_(torch.tensor([0.5, -1.0]))
        agent.actor_logstd.copy_(torch.tensor([[math.log(2.0), 0.0]]))
    x, action = torch.randn(4, 3), torch.tensor([[1.5, 0.0]]).expand(4, 2)
    out = agent.get_action_and_value(x, action)
    # by hand: sum over dimensions of -(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2
    by_hand = -(1.0 / 8 + math.log(2.0) + 0.5 * math.log(2 * math.pi)) - (0.5 + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(out.logprob, torch.full((4,), by_hand))
    dist = Normal(agent.get_mean(x), agent.actor_logstd.exp().expand(4, 2))
    assert torch.allclose(out.logprob, dist.log_prob(action).sum(-1))
    assert torch.allclose(out.entropy, dist.entropy().sum(-1))
    assert torch.allclose(out.entropy, torch.full((4,), 1.0 + math.log(2 * math.pi) + math.log(2.0)))
    assert out.logprob.shape == out.entropy.shape == out.value.shape == (4,)


def test_shapes_initial_policy_and_deterministic_act():
    torch.manual_seed(0)
    agent = GaussianActorCritic(3, 2)
    assert agent.actor_logstd.shape == (1, 2) and torch.all(agent.actor_logstd == 0)  # std 1 everywhere
    x = torch.randn(16, 3)
    out = agent.get_action_and_value(x)
    assert out.action.shape == (16, 2) and out.action.dtype == torch.float32
    assert out.logprob.shape == out.entropy.shape == out.value.shape == (16,)
    assert agent.get_mean(x).abs().max() < 0.1  # mean head gain 0.01: every initial mean near 0
    assert torch.equal(agent.act(x, deterministic=True), agent.get_mean(x))
    assert torch.equal(agent.get_action_and_value(x, deterministic=True).action, agent.get_mean(x))
    assert not torch.equal(agent.act(x, deterministic=False), agent.get_mean(x))
    scored = agent.get_action_and_value(x, out.action)
    assert torch.equal(scored.logprob, out.logprob)


def test_act_normalises_raw_observations_with_the_frozen_statistics():
    torch.manual_seed(0)
    agent = GaussianActorCritic(3, 1, norm_obs=True)
    agent.obs_normalizer.set_statistics([1.0, -2.0, 0.5], [4.0, 0.25, 1.0], 123.0)
    raw = torch.tensor([[3.0, -2.5, 100.0]])
    normalised = agent.obs_normalizer(raw)
    assert torch.allclose(normalised, torch.tensor([[1.0, -1.0, 10.0]]))  # (x - mean) / std, clipped to 10
    assert torch.equal(agent.act(raw), agent.get_mean(normalised))
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    agent.act(raw)
    assert all(torch.equal(before[k], v) for k, v in agent.state_dict().items())  # act never updates them
    assert {"obs_normalizer.mean", "obs_normalizer.var", "obs_normalizer.count"} <= set(before)


# -- build_agent picks the head from the action space ---------------------------------------------------
def test_build_agent_picks_the_head_from_the_action_space():
    config = PPOConfig()
    torch.manual_seed(0)
    discrete = build_agent(config, (8,), spaces.Discrete(4))
    torch.manual_seed(0)
    direct = MLPActorCritic(8, 4, config.hidden_size, config.num_hidden_layers, config.shared_trunk)
    assert type(discrete) is MLPActorCritic and discrete.obs_normalizer is None
    assert discrete.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(discrete.state_dict().values(), direct.state_dict().values()))
    box = build_agent(config, (3,), spaces.Box(-2.0, 2.0, (1,), np.float32))
    assert isinstance(box, GaussianActorCritic) and box.act_dim == 1
    assert isinstance(build_agent(config.replace(norm_obs=True), (3,), spaces.Discrete(2)).obs_normalizer,
                      ObsNormalizer)


@pytest.mark.parametrize("space, fragment", [
    (spaces.MultiDiscrete([3, 3, 2]), "MultiDiscrete of shape (3,) action space"),
    (spaces.MultiBinary(4), "MultiBinary of shape (4,) action space"),
    (spaces.Dict({"move": spaces.Discrete(2)}), "Dict action space"),
    (spaces.Box(-1.0, 1.0, (2, 2), np.float32), "Box of shape (2, 2) action space"),
])
def test_other_action_spaces_are_one_clear_line(space, fragment):
    with pytest.raises(ValueError) as info:
        build_agent(PPOConfig(), (4,), space)
    message = str(info.value)
    assert "\n" not in message and fragment in message and "supports Discrete actions and Box" in message


def test_pixels_with_box_actions_or_norm_obs_are_one_clear_line():
    box = spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(ValueError, match=r"Box action spaces need flat \(obs_dim,\) observations"):
        build_agent(PPOConfig(), (3, 84, 84), box)
    with pytest.raises(ValueError, match="norm_obs normalises flat"):
        build_agent(PPOConfig(norm_obs=True), (3, 84, 84), spaces.Discrete(3))


# -- rollouts: clipping in the env, raw samples in the buffer, ratio exactly 1 ---------------------------
class ActionSpy(gym.vector.VectorWrapper):
    """Records the actions (and raw final observations) that reach the wrapped vector env."""

    def __init__(self, env):
        super().__init__(env)
        self.actions, self.final_obs = [], []

    def step(self, actions):
        self.actions.append(np.array(actions))
        out = self.env.step(actions)
        if "final_obs" in out[4]:
            self.final_obs.append(out[4]["final_obs"])
        return out


def _spy_below(envs, wrapper_type):
    """Put an ActionSpy just inside the first wrapper of ``wrapper_type`` around ``envs``."""
    layer = envs
    while not isinstance(layer, wrapper_type):
        layer = layer.env
    layer.env = ActionSpy(layer.env)
    return layer.env


def test_the_env_gets_clipped_actions_and_the_buffer_keeps_the_raw_samples():
    torch.manual_seed(0)
    envs = make_vector_env("Pendulum-v1", 2)
    spy = _spy_below(envs, gym.wrappers.vector.ClipAction)
    agent = GaussianActorCritic(3, 1)
    with torch.no_grad():  # a mean far outside Pendulum's [-2, 2]
        agent.actor_head.weight.zero_()
        agent.actor_head.bias.fill_(100.0)
    buf, _ = RolloutCollector(envs, agent, num_steps=16, seed=0).collect()
    envs.close()
    assert buf.actions.shape == (16, 2, 1) and buf.actions.dtype == torch.float32
    assert buf.actions.min() > 90  # the samples, as drawn
    assert np.all(np.stack(spy.actions) == 2.0)  # what the pendulum got
    assert torch.allclose(buf.logprobs, Normal(100.0, 1.0).log_prob(buf.actions).sum(-1))  # of the raw samples
    assert buf.logprobs.min() > -10  # the clipped action, 98 std away, would score about -4800


def test_first_minibatch_ratio_is_exactly_one_on_pendulum():
    config = pendulum_config(update_epochs=2)
    assert config.norm_obs and config.norm_reward
    torch.manual_seed(config.seed)
    envs = make_vector_env(config.env_id, config.num_envs, norm_reward=True, gamma=config.gamma, norm_obs=True)
    agent = build_agent(config, envs.single_observation_space.shape, envs.single_action_space)
    buf, next_value = RolloutCollector(envs, agent, config.num_steps, seed=config.seed).collect()
    envs.close()
    assert buf.actions.shape == (config.num_steps, config.num_envs, 1)
    assert buf.obs.abs().max() <= 10.0 and abs(float(buf.obs.mean())) < 1.0  # stored normalised
    adv, ret = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations, next_value,
                           buf.final_values, config.gamma, config.gae_lambda)
    ratios = {}
    ppo_update(agent, torch.optim.Adam(agent.parameters(), lr=1e-3), buf, adv, ret, config, config.ent_coef,
               np.random.default_rng(0), on_minibatch=lambda epoch, mb, ratio: ratios.setdefault((epoch, mb), ratio))
    assert torch.equal(ratios[(0, 0)], torch.ones_like(ratios[(0, 0)]))
    assert not torch.allclose(ratios[(1, 0)], torch.ones_like(ratios[(1, 0)]))


def test_normalize_observation_scales_final_observations_too():
    envs = make_vector_env("Pendulum-v1", 2, norm_obs=True)
    norm = envs
    assert isinstance(norm, NormalizeObservation)
    spy = _spy_below(envs, NormalizeObservation)
    envs.reset(seed=0)
    for _ in range(200):  # Pendulum is truncated at 200 steps
        obs, _, _, truncations, info = envs.step(np.zeros((2, 1), dtype=np.float32))
    assert truncations.all() and obs.dtype == np.float32
    for i in range(2):
        assert np.array_equal(info["final_obs"][i], norm.normalize(spy.final_obs[-1][i]))
    assert norm.obs_rms.count > 200 and wrapper_attr(envs, "obs_rms") is norm.obs_rms
    envs.close()


# -- a real Pendulum run: checkpoints, load_agent, evaluate, the CLI ------------------------------------
@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    """A debug-sized Pendulum-v1 run; records the normaliser statistics each training-time evaluation used."""
    import ppo_course.trainer as trainer

    logdir = tmp_path_factory.mktemp("pendulum")
    seen = []

    def recording_evaluate(agent, *args, **kwargs):
        seen.append(agent.obs_normalizer.mean.clone())
        return evaluate(agent, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "evaluate", recording_evaluate)
        result = train(pendulum_config(), logdir, progress=False, tensorboard=False)
    return logdir, result, seen


def test_a_pendulum_run_writes_its_files(pendulum_run):
    logdir, result, _ = pendulum_run
    for name in ("metrics.csv", LATEST, BEST):
        assert (logdir / name).is_file(), name
    assert result.global_step == 2048 and np.isfinite(result.history[-1]["train/value_loss"])
    assert np.isfinite(result.last_eval.mean_return)


def test_obs_statistics_round_trip_through_the_checkpoint(pendulum_run):
    logdir, result, seen = pendulum_run
    ckpt = load_checkpoint(logdir / LATEST)
    assert ckpt["act_dim"] == 1 and "n_actions" not in ckpt and ckpt["obs_rms"]["count"] > 2048
    agent, config = load_agent(logdir / LATEST)
    assert config.norm_obs and isinstance(agent, GaussianActorCritic)
    for key in ("mean", "var", "count"):
        assert torch.equal(getattr(agent.obs_normalizer, key), torch.tensor(ckpt["obs_rms"][key], dtype=torch.float64))
    # the last evaluation of the run used the statistics of that moment: the ones checkpointed with it
    assert torch.equal(seen[-1], agent.obs_normalizer.mean) and not torch.equal(seen[0], seen[-1])
    # act() on a raw observation = the training env's normalisation with these statistics, then the mean
    wrapper = NormalizeObservation(make_vector_env("Pendulum-v1", 1))
    for key, value in ckpt["obs_rms"].items():
        setattr(wrapper.obs_rms, key, value)
    raw, _ = make_env("Pendulum-v1").reset(seed=3)
    policy_action = agent_policy(agent)(raw[None])
    expected = agent.get_mean(torch.as_tensor(wrapper.normalize(raw[None])))
    assert np.array_equal(policy_action, expected.detach().numpy())
    wrapper.close()


def test_evaluation_uses_the_statistics_frozen(pendulum_run):
    logdir, _, _ = pendulum_run
    agent, _ = load_agent(logdir / BEST)
    before = {k: v.clone() for k, v in agent.obs_normalizer.state_dict().items()}
    first, second = evaluate(agent, "Pendulum-v1", episodes=2), evaluate(agent, "Pendulum-v1", episodes=2)
    np.testing.assert_array_equal(first.returns, second.returns)
    assert all(torch.equal(before[k], v) for k, v in agent.obs_normalizer.state_dict().items())


def test_resume_restores_the_observation_statistics(tmp_path):
    short = pendulum_config(total_timesteps=1024, eval_interval=0, eval_episodes=1)
    train(short, tmp_path, progress=False, tensorboard=False)
    first = load_checkpoint(tmp_path / LATEST)["obs_rms"]
    train(short.replace(total_timesteps=1152), tmp_path, resume=True, progress=False, tensorboard=False)
    resumed = load_checkpoint(tmp_path / LATEST)["obs_rms"]
    assert resumed["count"] >= first["count"] + 128  # continued from the saved statistics, not from scratch
    with pytest.raises(CheckpointError, match=r"another shape \(norm_obs True -> False\)"):
        train(short.replace(total_timesteps=2048, norm_obs=False), tmp_path, resume=True, progress=False,
              tensorboard=False)


def test_a_run_saved_before_norm_obs_existed_resumes(tmp_path):
    """Checkpoints written before the norm_obs field read it as its default, False."""
    from ppo_course.checkpoint import save_checkpoint

    config = PPOConfig.from_presets(["debug"], env_id="CartPole-v1", total_timesteps=256, eval_interval=0,
                                    eval_episodes=1)
    train(config, tmp_path, progress=False, tensorboard=False)
    old = load_checkpoint(tmp_path / LATEST)
    del old["config"]["norm_obs"]
    save_checkpoint(tmp_path / LATEST, old)
    assert not load_agent(tmp_path / LATEST)[1].norm_obs
    resumed = train(config.replace(total_timesteps=512), tmp_path, resume=True, progress=False, tensorboard=False)
    assert resumed.global_step == 512


def _cli(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_eval_on_a_pendulum_run(pendulum_run):
    proc = _cli("eval", "--logdir", pendulum_run[0], "--episodes", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Pendulum-v1 (deterministic): mean return" in proc.stdout


def test_cli_play_saves_a_pendulum_gif(pendulum_run, tmp_path):
    proc = _cli("play", "--logdir", pendulum_run[0], "--episodes", "1", "--save-gif", "--gif-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    gifs = list(tmp_path.glob("*.gif"))
    assert len(gifs) == 1 and gifs[0].stat().st_size > 1000 and "200 steps" in proc.stdout


# -- presets -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", CONTINUOUS_ENVS)
def test_continuous_presets_are_valid_and_registered(env_id):
    check_env_id(env_id)
    config = PPOConfig.from_presets(env_id=env_id)
    assert config.norm_obs and config.norm_reward and config.ent_coef == 0.0
    assert config.env_id in ENV_DEFAULTS and config.minibatch_size == 64
