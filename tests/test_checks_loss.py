"""The ex04 checks: every reference implementation passes, stubs report "todo", crashes report "error"."""

import pytest
import torch

from ppo_course import losses
from ppo_course.checks import check_approx_kl, check_clipped_surrogate, check_ppo_loss, check_value_loss


# The solution notebook's reference code (solutions/ex04_ppo_loss.ipynb), in the learner's argument order.
def clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_coef):
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def value_loss(new_values, old_values, returns, clip_coef=None):
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    v_clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
             clip_coef, vf_coef, ent_coef):
    if advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    else:
        advantages = advantages - advantages.mean()
    policy = clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_coef)
    value = value_loss(new_values, old_values, returns, clip_coef)
    return policy - ent_coef * entropy.mean() + vf_coef * value


def approx_kl(new_logprobs, old_logprobs):
    logratio = new_logprobs - old_logprobs
    return ((torch.exp(logratio) - 1) - logratio).mean()


CHECKS = {
    "clipped_surrogate": (check_clipped_surrogate, clipped_surrogate),
    "value_loss": (check_value_loss, value_loss),
    "ppo_loss": (check_ppo_loss, ppo_loss),
    "approx_kl": (check_approx_kl, approx_kl),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_reference_passes(name):
    check, reference = CHECKS[name]
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message
    assert result  # truthy


@pytest.mark.parametrize("name", list(CHECKS))
def test_deterministic(name):
    check, reference = CHECKS[name]
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_package_versions_pass():
    """The package's own losses pass the same checks (ppo_loss takes its coefficients as keywords)."""
    assert check_clipped_surrogate(losses.clipped_surrogate, quiet=True)
    assert check_value_loss(losses.value_loss, quiet=True)
    assert check_ppo_loss(lambda *a: losses.ppo_loss(*a[:7], clip_coef=a[7], vf_coef=a[8], ent_coef=a[9]).loss,
                          quiet=True)
    assert check_approx_kl(losses.approx_kl, quiet=True)


@pytest.mark.parametrize("name", list(CHECKS))
def test_stub_is_todo(name):
    check, _ = CHECKS[name]

    def stub(*args):
        raise NotImplementedError("compute the ratio first")

    result = check(stub, quiet=True)
    assert result.status == "todo"
    assert result.message == "compute the ratio first"
    assert "not implemented yet — compute the ratio first" in str(result)


@pytest.mark.parametrize("name", list(CHECKS))
def test_crash_is_error_with_line(name):
    check, _ = CHECKS[name]

    def crashing(*args):
        x = args[0]
        return x.view(3, -1, 7).sum()  # a learner's shape mistake

    result = check(crashing, quiet=True)
    assert result.status == "error"
    assert "RuntimeError" in result.message and "x.view(3, -1, 7)" in result.message


def test_prints_one_line(capsys):
    check_clipped_surrogate(clipped_surrogate)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("✓ clipped_surrogate")


def test_strict_mode_raises(monkeypatch):
    from ppo_course.checks import CheckFailed

    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")
    with pytest.raises(CheckFailed):
        check_approx_kl(lambda new, old: (old - new).mean(), quiet=True)
    assert check_approx_kl(lambda new, old: (_ for _ in ()).throw(NotImplementedError("todo")),
                           quiet=True).status == "todo"
