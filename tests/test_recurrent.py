"""The recurrent (CNN + LSTM) agent and recurrent PPO: memory resets, exact re-unrolling, real short runs.

Most tests use ``MemoryCueEnv``, a tiny pixel task that needs memory: the first frame of an
episode shows a cue (left or right half lit), the following frames are blank, the last one
shows a query square, and only there does the action count (+1 if it names the cue, -1 if
not). A frame-stack-only agent sees the same query frame whatever the cue, so it cannot beat
chance; an LSTM can carry the cue. It is registered with Gymnasium, so ``train``, ``evaluate``
and the CLI run it like any other id.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from gymnasium import spaces

from ppo_course import PPOConfig, train
from ppo_course.advantages import compute_gae
from ppo_course.checkpoint import LATEST, load_checkpoint
from ppo_course.cli import main
from ppo_course.config import ConfigError
from ppo_course.envs import make_vector_env
from ppo_course.evaluate import RecurrentPolicy, evaluate
from ppo_course.networks import CNNActorCritic, NatureCNN, RecurrentActorCritic, build_agent, masked_lstm_unroll
from ppo_course.trainer import RolloutCollector, load_agent, make_collector, minibatch_indices, ppo_update

from lstm_reference import masked_lstm_unroll as torch_lstm_one_masked_step_at_a_time

MEMORY_ID = "PPOCourseTest/MemoryCue-v0"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small CNN batches run fastest on one thread (and a busy 2-core machine punishes two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class MemoryCueEnv(gym.Env):
    """Cue at t = 0, blank frames, query at t = length - 1; reward +-1 for naming the cue there."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, length: int = 4, size: int = 36, render_mode=None):
        self.length, self.size, self.render_mode = length, size, render_mode
        self.observation_space = spaces.Box(0, 255, (1, size, size), np.uint8)
        self.action_space = spaces.Discrete(2)

    def _frame(self) -> np.ndarray:
        f = np.zeros((1, self.size, self.size), np.uint8)
        half, third = self.size // 2, self.size // 3
        if self.t == 0:
            (f[0, :, half:] if self.cue else f[0, :, :half]).fill(255)
        elif self.t == self.length - 1:
            f[0, third:2 * third, third:2 * third] = 255
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._frame(), {}

    def step(self, action):
        last = self.t == self.length - 1
        reward = (1.0 if int(action) == self.cue else -1.0) if last else 0.0
        self.t = 0 if last else self.t + 1
        return self._frame(), reward, last, False, {}

    def render(self):
        return np.repeat(self._frame()[0][:, :, None], 3, axis=2)


if MEMORY_ID not in gym.registry:
    gym.register(MEMORY_ID, entry_point=MemoryCueEnv)


def memory_config(**overrides) -> PPOConfig:
    values = dict(env_id=MEMORY_ID, seed=0, total_timesteps=4096, num_envs=8, num_steps=16, num_minibatches=2,
                  update_epochs=4, learning_rate=2e-3, anneal_lr=True, use_lstm=True, lstm_hidden_size=32,
                  ent_coef=0.01, eval_interval=0, eval_episodes=20)
    values.update(overrides)
    config = PPOConfig(**values)
    config.validate()
    return config


def _sharp_agent(config, seed=0):
    """An untrained recurrent agent whose policy depends visibly on its memory (actor head x 300)."""
    torch.manual_seed(seed)
    agent = build_agent(config, (1, 36, 36), spaces.Discrete(2))
    with torch.no_grad():
        agent.actor_head.weight.mul_(300.0)
    return agent


def _cue_envs(lengths, time_limit=None):
    """One same-step-autoreset vector env of MemoryCueEnvs of the given episode lengths (optionally time-limited)."""
    def make(length):
        env = MemoryCueEnv(length=length)
        return gym.wrappers.TimeLimit(env, time_limit) if time_limit else env

    return gym.vector.SyncVectorEnv([lambda n=n: make(n) for n in lengths],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _two_rollouts(config, length=5, groups=1, agent=None, lengths=None, time_limit=None):
    """A rollout whose episodes end mid-rollout, started from a non-blank memory (the second one).

    ``groups`` > 1 splits the envs into that many vector envs (the collector's pipelined env groups).
    """
    lengths = lengths or [length] * config.num_envs
    size = len(lengths) // groups
    envs = [_cue_envs(lengths[g * size:(g + 1) * size], time_limit) for g in range(groups)]
    agent = agent if agent is not None else _sharp_agent(config)
    collector = make_collector(envs, agent, config.num_steps, seed=0)
    collector.collect()
    buf, next_value = collector.collect()
    collector.close()
    return agent, buf, next_value


# --------------------------------------------------------------------------------------------
def test_shapes_and_initial_policy():
    agent = RecurrentActorCritic((4, 84, 84), 12, lstm_hidden_size=64)
    T, N = 3, 2
    state = agent.initial_state(N)
    assert state[0].shape == state[1].shape == (1, N, 64)  # PyTorch's (num_layers, batch, hidden)
    x = torch.randint(0, 256, (T * N, 4, 84, 84), dtype=torch.uint8)  # time-major (T * N, C, H, W)
    out = agent.get_action_and_value(x, state, torch.zeros(T * N))
    assert out.action.shape == out.logprob.shape == out.value.shape == (T * N,)
    assert out.lstm_state[0].shape == (1, N, 64)
    assert torch.allclose(out.entropy, torch.full((T * N,), np.log(12.0)), atol=1e-3)  # actor gain 0.01
    assert all(torch.all(p == 0) for n, p in agent.lstm.named_parameters() if "bias" in n)
    assert NatureCNN((4, 84, 84)).linear.in_features == 64 * 7 * 7
    assert isinstance(build_agent(memory_config(use_lstm=False), (1, 36, 36), spaces.Discrete(2)), CNNActorCritic)
    with pytest.raises(ValueError, match="pixel observations"):
        build_agent(PPOConfig(use_lstm=True), (8,), spaces.Discrete(4))


def test_done_mask_resets_the_memory():
    torch.manual_seed(0)
    agent = RecurrentActorCritic((1, 36, 36), 2, lstm_hidden_size=16)
    episode_a = torch.randint(0, 256, (5, 1, 36, 36), dtype=torch.uint8)
    first_of_b = torch.randint(0, 256, (1, 1, 36, 36), dtype=torch.uint8)
    _, state_after_a = agent.get_states(episode_a, agent.initial_state(1), torch.tensor([1.0, 0, 0, 0, 0]))
    assert state_after_a[0].abs().sum() > 0
    fresh, _ = agent.get_states(first_of_b, agent.initial_state(1), torch.ones(1))
    masked, _ = agent.get_states(first_of_b, state_after_a, torch.ones(1))
    unmasked, _ = agent.get_states(first_of_b, state_after_a, torch.zeros(1))
    assert torch.equal(masked, fresh)  # the new episode does not see the old one
    assert not torch.allclose(unmasked, fresh)  # (and without the mask it would)
    # inside one unroll: the step where done = 1 restarts from zeros, per environment
    seq = torch.cat([episode_a, first_of_b])
    hidden, _ = agent.get_states(seq, agent.initial_state(1), torch.tensor([1.0, 0, 0, 0, 0, 1]))
    assert torch.allclose(hidden[-1], fresh[0], atol=1e-6)


def test_rollout_stores_start_state_and_episode_starts():
    config = memory_config(num_envs=4, num_steps=12)
    agent, buf, _ = _two_rollouts(config, length=5)
    h0, c0 = buf.initial_lstm_state
    assert h0.shape == (1, 4, 32) and h0.abs().sum() > 0  # the second rollout starts mid-episode
    assert buf.starts.shape == (12, 4)
    ended = (buf.terminations + buf.truncations)[:-1]
    assert torch.equal(buf.starts[1:], ended)  # a step starts an episode iff the previous one ended it
    assert 0 < buf.starts[1:].sum() < buf.starts[1:].numel()  # episodes end mid-rollout


@pytest.mark.parametrize("groups", [1, 2])
def test_recurrent_update_reproduces_rollout_logprobs(groups):
    """Whole-sequence minibatches re-unrolled from the stored state: ratio = 1 before any step
    (also when the rollout was collected in two pipelined env groups)."""
    config = memory_config(num_envs=4, num_steps=12, num_minibatches=2, update_epochs=2)
    agent, buf, next_value = _two_rollouts(config, length=5, groups=groups)
    adv, ret = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations, next_value,
                           buf.final_values, config.gamma, config.gae_lambda)
    # With a learning rate of 0 no minibatch ever sees changed weights: every ratio, over every
    # environment sequence and episode boundary, must be 1.
    frozen = torch.optim.Adam(agent.parameters(), lr=0.0)
    ratios = []
    ppo_update(agent, frozen, buf, adv, ret, config, 0.0, np.random.default_rng(0),
               on_minibatch=lambda epoch, mb, ratio: ratios.append(ratio))
    assert len(ratios) == 4 and sum(r.numel() for r in ratios) == 2 * buf.actions.numel()
    for ratio in ratios:
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5), (ratio - 1).abs().max()
    # and with learning, the first minibatch is still exact while later ones move
    seen = {}
    ppo_update(agent, torch.optim.Adam(agent.parameters(), lr=1e-2), buf, adv, ret, config, 0.0,
               np.random.default_rng(1), on_minibatch=lambda e, mb, r: seen.setdefault((e, mb), r))
    assert torch.allclose(seen[(0, 0)], torch.ones_like(seen[(0, 0)]), atol=1e-5)
    assert not torch.allclose(seen[(1, 0)], torch.ones_like(seen[(1, 0)]), atol=1e-3)


def test_env_groups_collect_what_one_vector_env_collects():
    """Two pipelined env groups give the rollout one vector env gives: the same frames, actions, rewards,
    episode ends and starts (exactly), and the same log-probs, values, bootstrap values and memory to float
    rounding. Greedy actions take sampling noise out; episodes of 4, 5 and 6 steps under a 5-step time
    limit give terminations, truncations (bootstrapped from the cut episode's memory) and both at once."""
    class Greedy(RecurrentActorCritic):
        def get_action_and_value(self, *args, **kwargs):
            return super().get_action_and_value(*args, **{**kwargs, "deterministic": True})

    config = memory_config(num_envs=6, num_steps=12, num_minibatches=2)
    lengths = [4, 5, 6, 6, 5, 4]
    results = []
    for groups in (1, 2):
        torch.manual_seed(0)
        agent = Greedy((1, 36, 36), 2, lstm_hidden_size=32)
        with torch.no_grad():
            agent.actor_head.weight.mul_(300.0)
        results.append(_two_rollouts(config, groups=groups, agent=agent, lengths=lengths, time_limit=5)[1:])
    (one, next_one), (two, next_two) = results
    assert one.truncations.sum() > 0 and one.terminations.sum() > 0 and one.final_values.abs().sum() > 0
    for name in ("obs", "actions", "rewards", "terminations", "truncations", "starts"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name
    for name in ("logprobs", "values", "final_values"):
        assert torch.allclose(getattr(one, name), getattr(two, name), atol=1e-5), name
    assert torch.allclose(next_one, next_two, atol=1e-5)
    for a, b in zip(one.initial_lstm_state, two.initial_lstm_state):
        assert a.shape == b.shape == (1, 6, 32) and a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-5)


def test_flat_random_minibatches_do_not_reproduce_the_rollout():
    """The shortcut -- flat random minibatches unrolled from the first sample's stored state -- gets ratio != 1."""
    config = memory_config(num_envs=4, num_steps=12)
    agent, buf, _ = _two_rollouts(config, length=5)
    T, N = buf.num_steps, buf.num_envs
    with torch.no_grad():
        # the shortcut's per-step snapshots: the state *before* each step (replayed exactly)
        h, c = buf.initial_lstm_state
        snapshots = []
        for t in range(T):
            snapshots.append((h.clone(), c.clone()))
            _, (h, c) = agent.get_states(buf.obs[t], (h, c), buf.starts[t])
        flat_obs, flat_starts = buf.obs.reshape(T * N, 1, 36, 36), buf.starts.reshape(-1)
        flat_actions, flat_logprobs = buf.actions.reshape(-1), buf.logprobs.reshape(-1)
        idx = torch.as_tensor(np.random.default_rng(0).permutation(T * N)[:T * N // 2])
        t0, n0 = divmod(int(idx[0]), N)
        state = (snapshots[t0][0][:, n0:n0 + 1], snapshots[t0][1][:, n0:n0 + 1])  # one "env" of mb samples
        out = agent.get_action_and_value(flat_obs[idx], state, flat_starts[idx], flat_actions[idx])
        ratio = torch.exp(out.logprob - flat_logprobs[idx])
    assert torch.allclose(ratio[0], torch.ones(()), atol=1e-5)  # only the first sample has its own memory
    assert (ratio - 1).abs().max() > 0.02  # the rest were fed another trajectory's memory (exact way: < 1e-5)


def test_minibatches_are_whole_environment_sequences():
    T, N = 5, 4
    batches = list(minibatch_indices(np.random.default_rng(0), T, N, 2, recurrent=True))
    assert len(batches) == 2
    covered = torch.cat([idx for idx, _ in batches]).sort().values
    assert torch.equal(covered, torch.arange(T * N))
    for idx, envs in batches:
        assert torch.equal(idx.reshape(T, -1) % N, envs.expand(T, -1))  # every step of these envs, time-major
    with pytest.raises(ConfigError, match="must divide num_envs"):
        list(minibatch_indices(np.random.default_rng(0), T, 6, 4, recurrent=True))
    with pytest.raises(ConfigError, match="num_minibatches.*num_envs = 6"):
        memory_config(num_envs=6, num_minibatches=4, num_steps=16)


def test_lstm_agent_remembers_the_cue_and_the_frame_stack_agent_cannot():
    lstm = train(memory_config(), None, progress=False)
    # On these 20 fixed evaluation seeds 13 cues are of one kind, so any policy that answers the
    # query frame the same way every time (all a memoryless agent can do) scores at most 0.3.
    assert lstm.last_eval.mean_return >= 0.9, lstm.last_eval
    control = train(memory_config(use_lstm=False, total_timesteps=1024), None, progress=False)
    assert control.last_eval.mean_return <= 0.3 + 1e-9, control.last_eval
    assert np.isfinite(control.history[-1]["train/value_loss"])


def test_recurrent_checkpoint_resume_evaluate_and_cli(tmp_path, capsys):
    config = memory_config(total_timesteps=512, eval_interval=256, eval_episodes=4)
    first = train(config, tmp_path, progress=False, tensorboard=False)
    assert first.global_step == 512 and (tmp_path / LATEST).is_file()
    resumed = train(config.replace(total_timesteps=768), tmp_path, resume=True, progress=False, tensorboard=False)
    assert resumed.global_step == 768 and load_checkpoint(tmp_path / LATEST)["global_step"] == 768

    agent, saved = load_agent(tmp_path / LATEST)
    assert isinstance(agent, RecurrentActorCritic) and saved.use_lstm and saved.lstm_hidden_size == 32
    result = evaluate(agent, MEMORY_ID, episodes=3)
    assert len(result.returns) == 3 and np.all(np.abs(result.returns) == 1.0)

    # the policy carries one memory per slot and restarts it with reset()
    policy = RecurrentPolicy(agent)
    env = MemoryCueEnv()
    obs, _ = env.reset(seed=0)
    policy(obs[None])
    assert policy.state[0].abs().sum() > 0 and policy.starts[0] == 0.0
    policy.reset(0)
    assert policy.starts[0] == 1.0

    assert main(["eval", "--logdir", str(tmp_path), "--checkpoint", LATEST, "--episodes", "2"]) == 0
    assert main(["play", "--logdir", str(tmp_path), "--episodes", "1", "--save-gif"]) == 0
    assert list((tmp_path / "gifs").glob("*.gif"))
    assert "episode 1: return" in capsys.readouterr().out


def test_env_kwargs_reach_the_environment():
    envs = make_vector_env("doom:basic", 1, frame_stack=2)
    assert envs.single_observation_space.shape == (2, 84, 84)
    envs.close()
    config = PPOConfig.from_presets(env_id="doom:deadly_corridor")
    assert config.lstm_hidden_size == 512 and config.ent_coef_final is not None and not config.norm_reward


def test_shipped_doom_basic_agent_loads_and_plays(tmp_path, capsys):
    from ppo_course.assets import pretrained_path

    agent, config = load_agent(pretrained_path("doom_basic"))
    assert isinstance(agent, RecurrentActorCritic) and config.env_id == "doom:basic"
    result = evaluate(agent, "doom:basic", episodes=3, env_kwargs=config.env_kwargs)
    assert result.stats["kills"].sum() >= 2, result  # it finds and shoots the monster
    assert main(["play", "--logdir", str(tmp_path), "--checkpoint", str(pretrained_path("doom_basic")),
                 "--episodes", "1", "--save-gif", "--gif-dir", str(tmp_path)]) == 0
    assert list(tmp_path.glob("*.gif")) and "episode 1: return" in capsys.readouterr().out


def test_stepwise_unroll_matches_torch_lstm():
    """get_states steps the nn.LSTM's parameters with lstm_step; it must be the same function."""
    torch.manual_seed(0)
    agent = RecurrentActorCritic((1, 36, 36), 2, lstm_hidden_size=16)
    x = torch.randint(0, 256, (6 * 3, 1, 36, 36), dtype=torch.uint8)
    state = (torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    hidden, (h, c) = agent.get_states(x, state, torch.zeros(6 * 3))
    expected, (h_ref, c_ref) = agent.lstm(agent.features(x).reshape(6, 3, -1), state)
    assert torch.allclose(hidden, expected.reshape(-1, 16), atol=1e-5)
    assert torch.allclose(h, h_ref, atol=1e-5) and torch.allclose(c, c_ref, atol=1e-5)


def test_masked_unroll_matches_torch_lstm_step_by_step_with_masks():
    """masked_lstm_unroll (two layers here) = nn.LSTM called one step at a time on the masked state."""
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=2)
    T, N = 6, 3
    features, state = torch.randn(T, N, 5), (torch.randn(2, N, 7), torch.randn(2, N, 7))
    starts = torch.zeros(T, N)
    starts[0, 1] = starts[3, 0] = starts[4, 2] = 1.0
    outputs, (h, c) = masked_lstm_unroll(lstm, features, state, starts)
    expected, (h_ref, c_ref) = torch_lstm_one_masked_step_at_a_time(lstm, features, state, starts)
    for t in range(T):
        assert torch.allclose(outputs[t], expected[t], atol=1e-5), t
    assert torch.allclose(h, h_ref, atol=1e-5) and torch.allclose(c, c_ref, atol=1e-5)


def test_masked_unroll_gradients_match_torch_lstm_step_by_step_with_masks():
    """The gradients too: the inputs' part of the gates is computed for all steps at once, the reference
    calls nn.LSTM one masked step at a time; every parameter, the features and the initial state agree."""
    torch.manual_seed(0)
    T, N = 7, 3
    starts = torch.zeros(T, N)
    starts[0, 1] = starts[3, 0] = starts[5, 2] = 1.0

    def gradients(unroll):
        torch.manual_seed(1)
        lstm = nn.LSTM(5, 6, num_layers=2)
        features = torch.randn(T, N, 5, requires_grad=True)
        state = (torch.randn(2, N, 6, requires_grad=True), torch.randn(2, N, 6, requires_grad=True))
        outputs, (h, c) = unroll(lstm, features, state)
        weights = torch.randn(T, N, 6)  # a loss that weighs every step's output differently
        ((outputs * weights).sum() + h.sum() + 2 * c.sum()).backward()
        return [features.grad, state[0].grad, state[1].grad] + [p.grad for p in lstm.parameters()]

    got = gradients(lambda lstm, features, state: masked_lstm_unroll(lstm, features, state, starts))
    expected = gradients(lambda lstm, features, state: torch_lstm_one_masked_step_at_a_time(lstm, features, state, starts))
    for mine, ref in zip(got, expected):
        assert torch.allclose(mine, ref, atol=1e-5), (mine - ref).abs().max()


@pytest.mark.parametrize("edit", ["data", "load_state_dict"])
def test_a_rollout_acts_with_weights_edited_since_the_last_one(edit):
    """Weights changed between rollouts -- through ``.data`` (which bumps no version counter) or
    ``load_state_dict`` -- are the ones the next rollout acts with: its log-probs are the update's."""
    config = memory_config()
    agent = _sharp_agent(config)
    collector = make_collector([_cue_envs([5] * config.num_envs)], agent, config.num_steps, seed=0)
    collector.collect()
    if edit == "data":
        agent.features.linear.weight.data.mul_(-1.5)
        agent.lstm.weight_ih_l0.data.mul_(-1.0)
    else:
        agent.load_state_dict(_sharp_agent(config, seed=1).state_dict())
    buf, _ = collector.collect()
    collector.close()
    out = agent.get_action_and_value(buf.obs.reshape(-1, *buf.obs.shape[2:]), buf.initial_lstm_state,
                                     buf.starts.reshape(-1), buf.actions.reshape(-1))
    assert torch.allclose(out.logprob, buf.logprobs.reshape(-1), atol=1e-5)
    assert torch.allclose(out.value, buf.values.reshape(-1), atol=1e-5)
