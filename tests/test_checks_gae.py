"""The ex03 checks: the reference GAE passes, stubs say "not implemented yet", other exceptions
name the learner's line, and results are deterministic."""

import pytest
import torch

from ppo_course.advantages import compute_gae as package_gae
from ppo_course.checks import check_gae, check_gae_with_truncation


# -- reference implementations (the solution notebook's code) -----------------------------------
def compute_gae(rewards, values, dones, next_value, gamma, gae_lambda):
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        next_values = next_value if t == num_steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        last_gae = delta + gamma * gae_lambda * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def compute_gae_with_truncation(rewards, values, terminations, truncations, next_value, final_values,
                                gamma, gae_lambda):
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        following = next_value if t == num_steps - 1 else values[t + 1]
        next_values = torch.where(truncations[t].bool(), final_values[t], following)
        done = torch.clamp(terminations[t] + truncations[t], max=1.0)
        delta = rewards[t] + gamma * next_values * (1.0 - terminations[t]) - values[t]
        last_gae = delta + gamma * gae_lambda * (1.0 - done) * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def package_simple(rewards, values, dones, next_value, gamma, gae_lambda):
    return package_gae(rewards, values, dones, torch.zeros_like(dones), next_value, gamma=gamma, gae_lambda=gae_lambda)


CASES = [(check_gae, compute_gae), (check_gae, package_simple),
         (check_gae_with_truncation, compute_gae_with_truncation), (check_gae_with_truncation, package_gae)]
IDS = ["gae", "package_gae", "gae_with_truncation", "package_gae_with_truncation"]


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_reference_passes(check, reference):
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_deterministic(check, reference):
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_prints_a_tick_line(capsys):
    check_gae(compute_gae)
    assert capsys.readouterr().out.startswith("✓ compute_gae:")


@pytest.mark.parametrize("check", [check_gae, check_gae_with_truncation])
def test_stub_is_todo_with_its_hint(check):
    def stub(*args):
        raise NotImplementedError("loop backwards over t")

    result = check(stub, quiet=True)
    assert result.status == "todo" and "loop backwards over t" in result.message
    assert "not implemented yet" in str(result)


def test_other_exception_is_error_with_the_learners_line():
    def broken(rewards, values, dones, next_value, gamma, gae_lambda):
        advantages = torch.zeros_like(values)
        for t in reversed(range(rewards.shape[0])):
            advantages[t] = rewards[t] + gamma * values[t + 1] - values[t]  # IndexError at the last step
        return advantages, advantages + values

    result = check_gae(broken, quiet=True)
    assert result.status == "error"
    assert "IndexError" in result.message and "line" in result.message
    assert "values[t + 1]" in result.message


def test_check_is_fast():
    import time

    start = time.perf_counter()
    check_gae_with_truncation(compute_gae_with_truncation, quiet=True)
    assert time.perf_counter() - start < 1.0


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch):
    from ppo_course.checks import CheckFailed

    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")

    def no_bootstrap(rewards, values, dones, next_value, gamma, gae_lambda):
        return compute_gae(rewards, values, dones, torch.zeros_like(next_value), gamma, gae_lambda)

    with pytest.raises(CheckFailed, match="no bootstrap at the rollout cut"):
        check_gae(no_bootstrap, quiet=True)
