"""Bug catalogue, ex07: realistic broken LSTM unrolls, sequence minibatches and re-unrolls, each caught by its
check with its specific diagnosis (selected by ``pytest -k bug``)."""

import numpy as np
import pytest
import torch

from ppo_course.checks import check_masked_lstm_unroll, check_reunroll_logprobs, check_sequence_minibatches

from conftest import assert_caught


# -- ex07 task 1: masked_lstm_unroll --------------------------------------------------------------
def test_bug_unroll_memory_leaking_across_episodes():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        outputs, (h, c) = lstm(features, lstm_state)  # one call: the state is never reset
        return outputs, (h, c)

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "memory leaking across episodes")


def test_bug_unroll_masks_only_before_the_sequence():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        keep = (1.0 - starts[0]).view(1, -1, 1)
        h, c = lstm_state
        return lstm(features, (h * keep, c * keep))

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "goes through nn.LSTM in one call")


def test_bug_unroll_masks_after_the_step():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        h, c = lstm_state
        outputs = []
        for t in range(features.shape[0]):
            out, (h, c) = lstm(features[t:t + 1], (h, c))
            keep = (1.0 - starts[t]).view(1, -1, 1)
            h, c = h * keep, c * keep  # reset after the step: one step late
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "off by one")


def test_bug_unroll_detaches_the_memory_between_steps():
    """Right values, but the gradient stops at each step: no backpropagation through time."""
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        h, c = lstm_state
        outputs = []
        for t in range(features.shape[0]):
            keep = (1.0 - starts[t]).view(1, -1, 1)
            out, (h, c) = lstm(features[t:t + 1], (h.detach() * keep, c.detach() * keep))
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "no gradient flows back through time")


def test_bug_unroll_masks_the_whole_batch():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        h, c = lstm_state
        outputs = []
        for t in range(features.shape[0]):
            if starts[t].any():  # any env starting an episode wipes every env's memory
                h, c = torch.zeros_like(h), torch.zeros_like(c)
            out, (h, c) = lstm(features[t:t + 1], (h, c))
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "resets the whole batch")


def test_bug_unroll_zeroes_h_but_not_c():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        h, c = lstm_state
        outputs = []
        for t in range(features.shape[0]):
            h = h * (1.0 - starts[t]).view(1, -1, 1)
            out, (h, c) = lstm(features[t:t + 1], (h, c))
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "only h is zeroed")


def test_bug_unroll_state_layout_batch_first():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        h, c = lstm_state
        outputs = []
        for t in range(features.shape[0]):
            keep = (1.0 - starts[t]).view(1, -1, 1)
            out, (h, c) = lstm(features[t:t + 1], (h * keep, c * keep))
            outputs.append(out)
        return torch.cat(outputs), (h.permute(1, 0, 2), c.permute(1, 0, 2))  # a batch-first storage layout

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "state layout is (num_layers, N, H)")


def test_bug_unroll_in_place_reset_of_the_callers_state():
    def masked_lstm_unroll(lstm, features, lstm_state, starts):
        h, c = lstm_state
        outputs = []
        for t in range(features.shape[0]):
            h[:, starts[t].bool()] = 0.0  # writes into the caller's tensors at t = 0
            c[:, starts[t].bool()] = 0.0
            out, (h, c) = lstm(features[t:t + 1], (h, c))
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    assert_caught(check_masked_lstm_unroll(masked_lstm_unroll, quiet=True), "modified lstm_state (h) in place")


# -- ex07 task 2: sequence_minibatches ------------------------------------------------------------
def test_bug_minibatches_flat_minibatch_unrolling():
    def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
        order = torch.as_tensor(rng.permutation(num_steps * num_envs))  # flat random samples
        size = num_steps * num_envs // num_minibatches
        return [(order[i:i + size], torch.unique(order[i:i + size] % num_envs))
                for i in range(0, num_steps * num_envs, size)]

    assert_caught(check_sequence_minibatches(sequence_minibatches, quiet=True), "flat-minibatch unrolling")


@pytest.mark.parametrize("layout", ["time-major", "env-major"])
def test_bug_minibatches_wrong_stride_is_not_called_flat_unrolling(layout):
    """Whole env sequences, but rows num_steps apart instead of num_envs: a stride slip, named as one."""
    def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
        out, t = [], torch.arange(num_steps)
        for g in np.split(rng.permutation(num_envs), num_minibatches):
            g = torch.as_tensor(g)
            flat = t[:, None] * num_steps + g[None, :] if layout == "time-major" else g[:, None] * num_steps + t
            out.append((flat.reshape(-1), g))
        return out

    assert_caught(check_sequence_minibatches(sequence_minibatches, quiet=True), "the flat indices step by")


def test_bug_minibatches_not_shuffled():
    def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
        flat = torch.arange(num_steps * num_envs).reshape(num_steps, num_envs)
        return [(flat[:, g].reshape(-1), g) for g in torch.arange(num_envs).chunk(num_minibatches)]

    assert_caught(check_sequence_minibatches(sequence_minibatches, quiet=True), "not shuffled")


def test_bug_minibatches_overlapping_envs():
    def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
        flat = torch.arange(num_steps * num_envs).reshape(num_steps, num_envs)
        size = num_envs // num_minibatches
        groups = [torch.as_tensor(rng.choice(num_envs, size, replace=False)) for _ in range(num_minibatches)]
        return [(flat[:, g].reshape(-1), g) for g in groups]  # independent draws: envs repeat, others missing

    assert_caught(check_sequence_minibatches(sequence_minibatches, quiet=True), "appears in more than one minibatch")


def test_bug_minibatches_env_major_flat_indices():
    def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
        out = []
        for g in np.split(rng.permutation(num_envs), num_minibatches):
            g = torch.as_tensor(g)
            out.append(((g[:, None] + torch.arange(num_steps)[None] * num_envs).reshape(-1), g))
        return out

    assert_caught(check_sequence_minibatches(sequence_minibatches, quiet=True), "is env-major")


def test_bug_minibatches_ignore_the_rng():
    def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
        flat = torch.arange(num_steps * num_envs).reshape(num_steps, num_envs)
        return [(flat[:, g].reshape(-1), g) for g in torch.randperm(num_envs).chunk(num_minibatches)]

    assert_caught(check_sequence_minibatches(sequence_minibatches, quiet=True), "with the rng")


# -- ex07 task 3: reunroll_logprobs ---------------------------------------------------------------
def test_bug_reunroll_from_a_zero_state():
    def reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx):
        state = agent.initial_state(len(env_idx))  # a blank memory, not the rollout's
        return agent.get_action_and_value(obs[:, env_idx].reshape(-1, *obs.shape[2:]), state,
                                          starts[:, env_idx].reshape(-1), actions[:, env_idx].reshape(-1)).logprob

    assert_caught(check_reunroll_logprobs(reunroll_logprobs, quiet=True), "re-unrolled from a zero state")


def test_bug_reunroll_ignores_episode_starts():
    def reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx):
        h0, c0 = initial_state
        n = len(env_idx) * obs.shape[0]
        return agent.get_action_and_value(obs[:, env_idx].reshape(-1, *obs.shape[2:]), (h0[:, env_idx], c0[:, env_idx]),
                                          torch.zeros(n), actions[:, env_idx].reshape(-1)).logprob

    assert_caught(check_reunroll_logprobs(reunroll_logprobs, quiet=True), "the episode starts are ignored")


def test_bug_reunroll_env_major_flattening():
    def reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx):
        h0, c0 = initial_state
        mb_obs = obs.transpose(0, 1)[env_idx].reshape(-1, *obs.shape[2:])  # env by env: env-major rows
        return agent.get_action_and_value(mb_obs, (h0[:, env_idx], c0[:, env_idx]), starts.T[env_idx].reshape(-1),
                                          actions.T[env_idx].reshape(-1)).logprob

    assert_caught(check_reunroll_logprobs(reunroll_logprobs, quiet=True), "flattened env-major")


def test_bug_reunroll_state_not_selected():
    def reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx):
        h0, c0 = initial_state
        n = len(env_idx)
        return agent.get_action_and_value(obs[:, env_idx].reshape(-1, *obs.shape[2:]), (h0[:, :n], c0[:, :n]),
                                          starts[:, env_idx].reshape(-1), actions[:, env_idx].reshape(-1)).logprob

    assert_caught(check_reunroll_logprobs(reunroll_logprobs, quiet=True), "initial state is not selected with env_idx")


def test_bug_reunroll_without_gradient():
    @torch.no_grad()
    def reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx):
        h0, c0 = initial_state
        return agent.get_action_and_value(obs[:, env_idx].reshape(-1, *obs.shape[2:]), (h0[:, env_idx], c0[:, env_idx]),
                                          starts[:, env_idx].reshape(-1), actions[:, env_idx].reshape(-1)).logprob

    assert_caught(check_reunroll_logprobs(reunroll_logprobs, quiet=True), "carry no gradient")
