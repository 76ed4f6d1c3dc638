"""The ex07 checks: the references pass (the solution's code and the package's own pieces), stubs say
"not implemented yet", other exceptions name the learner's line, and results are deterministic."""


import numpy as np
import pytest
import torch

from ppo_course.checks import (CheckFailed, check_masked_lstm_unroll, check_reunroll_logprobs,
                               check_sequence_minibatches)
from ppo_course.checks.recurrent import make_recurrent_rollout
from ppo_course.trainer import minibatch_indices

from lstm_reference import masked_lstm_unroll  # the solution notebook's unroll, shared with test_recurrent.py


# -- reference implementations (the solution notebook's code) -----------------------------------
def sequence_minibatches(num_steps, num_envs, num_minibatches, rng):
    flat = torch.arange(num_steps * num_envs).reshape(num_steps, num_envs)
    batches = []
    for group in np.split(rng.permutation(num_envs), num_minibatches):
        env_indices = torch.as_tensor(group, dtype=torch.long)
        batches.append((flat[:, env_indices].reshape(-1), env_indices))
    return batches


def reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx):
    h0, c0 = initial_state
    mb_obs = obs[:, env_idx].reshape(-1, *obs.shape[2:])
    out = agent.get_action_and_value(mb_obs, (h0[:, env_idx], c0[:, env_idx]), starts[:, env_idx].reshape(-1),
                                     actions[:, env_idx].reshape(-1))
    return out.logprob


def package_minibatches(num_steps, num_envs, num_minibatches, rng):
    return list(minibatch_indices(rng, num_steps, num_envs, num_minibatches, recurrent=True))


def package_unroll(lstm, features, lstm_state, starts):
    """RecurrentActorCritic.get_states' loop written with nn.LSTM's sequence call per step, returning (T, N, H)."""
    from ppo_course.checks.recurrent import _reference_unroll

    return _reference_unroll(lstm, features, lstm_state, starts)


def reunroll_as_matrix(agent, obs, actions, starts, initial_state, env_idx):
    return reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx).reshape(obs.shape[0], len(env_idx))


CASES = [(check_masked_lstm_unroll, masked_lstm_unroll), (check_masked_lstm_unroll, package_unroll),
         (check_sequence_minibatches, sequence_minibatches), (check_sequence_minibatches, package_minibatches),
         (check_reunroll_logprobs, reunroll_logprobs), (check_reunroll_logprobs, reunroll_as_matrix)]
IDS = ["masked_lstm_unroll", "package_get_states", "sequence_minibatches", "package_minibatch_indices",
       "reunroll_logprobs", "reunroll_logprobs_T_by_n"]


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_reference_passes(check, reference):
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message


@pytest.mark.parametrize("check, reference", CASES[::2], ids=IDS[::2])
def test_deterministic(check, reference):
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_synthetic_rollout_has_memory_and_mid_rollout_starts():
    r = make_recurrent_rollout()
    h0, c0 = r["initial_state"]
    assert h0.abs().sum() > 0 and c0.abs().sum() > 0
    assert r["starts"][1:].sum() >= 3 and r["obs"].dtype == torch.uint8
    assert r["logprobs"].shape == r["actions"].shape == r["starts"].shape == (8, 4)


def test_prints_a_tick_line(capsys):
    check_sequence_minibatches(sequence_minibatches)
    assert capsys.readouterr().out.startswith("✓ sequence_minibatches:")


def stub(*args, **kwargs):
    raise NotImplementedError("mask before the step")


@pytest.mark.parametrize("check", [check_masked_lstm_unroll, check_sequence_minibatches, check_reunroll_logprobs])
def test_stub_is_todo_with_its_hint(check):
    result = check(stub, quiet=True)
    assert result.status == "todo" and "mask before the step" in result.message
    assert "not implemented yet" in str(result)


def test_other_exception_is_error_with_the_learners_line():
    def broken(lstm, features, lstm_state, starts):
        h, c = lstm_state
        keep = (1.0 - starts[0]).view(-1, 1, 1)  # (N, 1, 1) against (layers, N, H)
        return lstm(features, (h * keep, c * keep))

    result = check_masked_lstm_unroll(broken, quiet=True)
    assert result.status == "error"
    assert "line" in result.message and "lstm(features" in result.message


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch):
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")

    def leaking(lstm, features, lstm_state, starts):
        return lstm(features, lstm_state)

    with pytest.raises(CheckFailed, match="memory leaking across episodes"):
        check_masked_lstm_unroll(leaking, quiet=True)
