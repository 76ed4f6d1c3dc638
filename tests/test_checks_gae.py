"""The ex03 checks: the reference GAE passes, stubs say "not implemented yet", other exceptions
name the learner's line, and results are deterministic."""

import numpy as np
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


# -- unusual but correct implementations: each passes both checks -------------------------------------------
def _inputs(terminations, truncations, final_values, values):
    final_values = torch.zeros_like(values) if final_values is None else final_values
    return final_values, torch.clamp(terminations + truncations, max=1.0)


def gae_float64(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                gae_lambda=0.95):
    """The loop in float64, converted back at the end."""
    final_values, _ = _inputs(terminations, truncations, final_values, values)
    args = (t.double() for t in (rewards, values, terminations, truncations, next_value, final_values))
    advantages, returns = compute_gae(*args, gamma, gae_lambda)
    return advantages.float(), returns.float()


def gae_numpy(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
              gae_lambda=0.95):
    """NumPy arrays throughout, torch tensors only at the end."""
    final_values, _ = _inputs(terminations, truncations, final_values, values)
    r, v, term, trunc, nv, fv = (t.numpy() for t in (rewards, values, terminations, truncations, next_value,
                                                     final_values))
    advantages, last_gae = np.zeros_like(v), np.zeros_like(nv)
    for t in range(len(r) - 1, -1, -1):
        following = nv if t == len(r) - 1 else v[t + 1]
        next_values = np.where(trunc[t] > 0, fv[t], following)
        delta = r[t] + gamma * next_values * (1 - term[t]) - v[t]
        last_gae = delta + gamma * gae_lambda * (1 - np.maximum(term[t], trunc[t])) * last_gae
        advantages[t] = last_gae
    return torch.from_numpy(advantages), torch.from_numpy(advantages + v)


def _deltas(rewards, values, terminations, truncations, next_value, final_values, gamma):
    following = torch.cat([values[1:], next_value.unsqueeze(0)])
    next_values = torch.where(truncations.bool(), final_values, following)
    return rewards + gamma * next_values * (1 - terminations) - values


def gae_matrix(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
               gae_lambda=0.95):
    """No loop: A = W @ delta per env, W[t, k] = prod_{t <= j < k} gamma * lambda * (1 - done_j) for k >= t."""
    final_values, ended = _inputs(terminations, truncations, final_values, values)
    delta = _deltas(rewards, values, terminations, truncations, next_value, final_values, gamma)
    carry = gamma * gae_lambda * (1 - ended)  # (T, N): the factor from A_{j+1} to A_j
    idx = torch.arange(len(rewards))
    inside = (idx[:, None, None] <= idx[None, None, :]) & (idx[None, None, :] < idx[None, :, None])  # (t, k, j)
    factors = torch.where(inside[..., None], carry[None, None], torch.ones(()))  # (t, k, j, N)
    weights = factors.prod(dim=2) * (idx[None, :] >= idx[:, None])[..., None]  # (t, k, N)
    advantages = (weights * delta[None]).sum(dim=1)
    return advantages, advantages + values


def gae_reverse_cumsum(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                       gae_lambda=0.95):
    """No loop: A_t = c^-t * sum_{k = t}^{end of t's episode} c^k delta_k, a reversed cumsum cut at episode ends."""
    final_values, ended = _inputs(terminations, truncations, final_values, values)
    delta = _deltas(rewards, values, terminations, truncations, next_value, final_values, gamma).double()
    c, T = gamma * gae_lambda, len(rewards)
    if c == 0:
        return delta.float(), (delta + values).float()
    powers = c ** torch.arange(T, dtype=torch.float64)[:, None]
    tail = (delta * powers).flip(0).cumsum(0).flip(0)  # sum over k >= t
    after = torch.cat([tail[1:], torch.zeros_like(tail[:1])])  # sum over k >= t + 1
    steps = torch.arange(T)[:, None].expand_as(ended)
    episode_end = torch.where(ended.bool(), steps, torch.full_like(steps, T - 1)).flip(0).cummin(0).values.flip(0)
    advantages = ((tail - after.gather(0, episode_end)) / powers).float()
    return advantages, advantages + values


def gae_where(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
              gae_lambda=0.95):
    """torch.where to choose the bootstrap and to reset the carry, instead of multiplying by masks."""
    final_values, ended = _inputs(terminations, truncations, final_values, values)
    advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else values[t + 1]
        next_values = torch.where(truncations[t] > 0, final_values[t], following)
        delta = torch.where(terminations[t] > 0, rewards[t] - values[t], rewards[t] + gamma * next_values - values[t])
        last_gae = torch.where(ended[t] > 0, delta, delta + gamma * gae_lambda * last_gae)
        advantages[t] = last_gae
    return advantages, advantages + values


@pytest.mark.parametrize("check", [check_gae, check_gae_with_truncation])
@pytest.mark.parametrize("variant", [gae_float64, gae_numpy, gae_matrix, gae_reverse_cumsum, gae_where],
                         ids=lambda f: f.__name__)
def test_unusual_correct_implementations_pass(check, variant):
    result = check(variant, quiet=True)
    assert result.status == "pass", result.message


def test_a_wrong_output_is_localised_when_no_mistake_reproduces_it():
    """A mistake nobody would catalogue: the check says which rollout, which step and env, and the inputs."""
    def compute(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                gae_lambda=0.95):
        advantages, _ = compute_gae(rewards, values, terminations, truncations, next_value, final_values, gamma,
                                    gae_lambda)
        advantages = advantages.clone()
        advantages[0, -1] += 0.5  # the first step of the last env only
        return advantages, advantages + values

    result = check_gae_with_truncation(compute, quiet=True)
    assert result.status == "fail"
    assert "advantages differ in case 'one long episode cut by the rollout' (T=8, N=1" in result.message
    assert "at t=0, env 0 expected" in result.message and "steps 1..7 are right" in result.message
    assert "expected" in result.message and "got" in result.message and "none of the" in result.message


# -- the helper both check modules use -------------------------------------------------------------------------
def test_first_difference_scans_in_the_order_asked_and_names_the_index():
    from ppo_course.checks._hypotheses import first_difference

    expected = torch.zeros(4, 2)
    got = expected.clone()
    got[1, 1], got[3, 0] = 1.0, 2.0
    forwards = first_difference(expected, got, ("t", "env"))
    assert (forwards.index, forwards.where, forwards.got, forwards.count, forwards.size) == ((1, 1), "t=1, env=1",
                                                                                           1.0, 2, 8)
    assert first_difference(expected, got, ("t", "env"), reverse=(0,)).index == (3, 0)
    assert first_difference(expected, expected.clone()) is None
    with pytest.raises(ValueError, match="shapes differ"):
        first_difference(expected, got[:2])


def test_matching_hypothesis_names_only_a_full_reproduction_in_priority_order():
    from ppo_course.checks._hypotheses import matching_hypothesis

    nan = float("nan")
    got = [torch.tensor([1.0, 2.0]), torch.tensor([nan])]
    evaluated = []

    def per_case(name, *outputs):
        def produce():
            for case, out in enumerate(outputs):
                evaluated.append((name, case))
                yield torch.tensor(out)
        return name, produce

    hypotheses = [("raises", lambda: 1 / 0),
                  per_case("first case only", [1.0, 2.0], [0.0]),
                  per_case("lazy", [9.0, 9.0], [nan]),
                  per_case("reproduces", [1.0, 2.00001], [nan]),
                  ("reproduces too, but later", [torch.tensor([1.0, 2.0]), torch.tensor([nan])])]
    assert matching_hypothesis(got, hypotheses, atol=1e-4) == "reproduces"
    assert ("lazy", 0) in evaluated and ("lazy", 1) not in evaluated  # stopped at its first wrong case
    assert matching_hypothesis(got, hypotheses[:3]) is None
