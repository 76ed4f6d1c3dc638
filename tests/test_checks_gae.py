"""The ex03 checks: the reference GAE passes, stubs say "not implemented yet", other exceptions
name the learner's line, and results are deterministic."""

import pytest
import torch

from ppo_course.advantages import compute_gae as package_gae
from ppo_course.checks import check_gae, check_gae_with_truncation


# -- reference implementations (the solution notebook's code) -----------------------------------
# ex03 builds one function, with the package's name and signature, in two steps.
def compute_gae_terminations_only(rewards, values, terminations, truncations, next_value, final_values=None,
                                  gamma=0.99, gae_lambda=0.95):
    """Task 1: truncations and final_values are ignored."""
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        next_values = next_value if t == num_steps - 1 else values[t + 1]
        not_terminated = 1.0 - terminations[t]
        delta = rewards[t] + gamma * next_values * not_terminated - values[t]
        last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                gae_lambda=0.95):
    """Task 2: truncated steps bootstrap from final_values; any episode end stops the recursion."""
    num_steps = rewards.shape[0]
    if final_values is None:
        final_values = torch.zeros_like(values)
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        following = next_value if t == num_steps - 1 else values[t + 1]
        next_values = torch.where(truncations[t].bool(), final_values[t], following)
        ended = torch.clamp(terminations[t] + truncations[t], max=1.0)
        delta = rewards[t] + gamma * next_values * (1.0 - terminations[t]) - values[t]
        last_gae = delta + gamma * gae_lambda * (1.0 - ended) * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


CASES = [(check_gae, compute_gae_terminations_only), (check_gae, compute_gae), (check_gae, package_gae),
         (check_gae_with_truncation, compute_gae), (check_gae_with_truncation, package_gae)]
IDS = ["gae_terminations_only", "gae_full", "package_gae", "gae_with_truncation", "package_gae_with_truncation"]


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_reference_passes(check, reference):
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_deterministic(check, reference):
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_prints_a_tick_line(capsys):
    check_gae(compute_gae_terminations_only)
    assert capsys.readouterr().out.startswith("✓ compute_gae:")


def test_terminations_only_fails_the_truncation_check():
    """Task 1's function is not yet task 2's: the truncation check names what is missing."""
    result = check_gae_with_truncation(compute_gae_terminations_only, quiet=True)
    assert result.status == "fail" and "truncation ignored" in result.message


def test_both_checks_pass_final_values_and_gamma_positionally():
    """One calling convention: all eight arguments, in the package's order."""
    calls = []

    def spy(*args):
        calls.append(len(args))
        return package_gae(*args)

    assert check_gae(spy, quiet=True) and check_gae_with_truncation(spy, quiet=True)
    assert set(calls) == {8}


@pytest.mark.parametrize("check", [check_gae, check_gae_with_truncation])
def test_stub_is_todo_with_its_hint(check):
    def stub(*args):
        raise NotImplementedError("loop backwards over t")

    result = check(stub, quiet=True)
    assert result.status == "todo" and "loop backwards over t" in result.message
    assert "not implemented yet" in str(result)


def test_other_exception_is_error_with_the_learners_line():
    def broken(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
               gae_lambda=0.95):
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
    check_gae_with_truncation(compute_gae, quiet=True)
    assert time.perf_counter() - start < 1.0


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch):
    from ppo_course.checks import CheckFailed

    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")

    def no_bootstrap(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                     gae_lambda=0.95):
        return compute_gae_terminations_only(rewards, values, terminations, truncations, torch.zeros_like(next_value),
                                             final_values, gamma, gae_lambda)

    with pytest.raises(CheckFailed, match="no bootstrap at the rollout cut"):
        check_gae(no_bootstrap, quiet=True)
