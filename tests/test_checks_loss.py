"""The ex04 checks: every reference implementation passes, stubs report "todo", crashes report "error"."""

import numpy as np
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


# -- unusual but correct implementations: each passes its check ----------------------------------------------
def surrogate_where(new_logprobs, old_logprobs, advantages, clip_coef):
    """torch.where instead of torch.min, and the ratio as 1 + expm1(log r)."""
    ratio = 1 + torch.expm1(new_logprobs - old_logprobs)
    unclipped, clipped = ratio * advantages, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.where(unclipped < clipped, unclipped, clipped).mean()


def surrogate_float64(new_logprobs, old_logprobs, advantages, clip_coef):
    return clipped_surrogate(new_logprobs.double(), old_logprobs.double(), advantages.double(), clip_coef).float()


def surrogate_detached_constants(new_logprobs, old_logprobs, advantages, clip_coef):
    return clipped_surrogate(new_logprobs, old_logprobs.detach(), advantages.detach(), clip_coef)


def value_where(new_values, old_values, returns, clip_coef=None):
    """torch.where instead of torch.max, and V_clip as a clamp around the old values."""
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    v_clipped = torch.clamp(new_values, old_values - clip_coef, old_values + clip_coef)
    clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.where(unclipped > clipped, unclipped, clipped).mean()


def ppo_loss_detached_constants(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                                clip_coef, vf_coef, ent_coef):
    """Everything recorded in the rollout detached explicitly: constants either way."""
    return ppo_loss(new_logprobs, old_logprobs.detach(), advantages.detach(), new_values, old_values.detach(),
                    returns.detach(), entropy, clip_coef, vf_coef, ent_coef)


def ppo_loss_item_statistics(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                             clip_coef, vf_coef, ent_coef):
    """Normalisation with Python-float statistics (.item()): constants, as the advantages are."""
    std = advantages.std().item() if advantages.numel() > 1 else 1.0
    advantages = (advantages - advantages.mean().item()) / (std + 1e-8)
    return (clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_coef) - ent_coef * entropy.mean()
            + vf_coef * value_loss(new_values, old_values, returns, clip_coef))


def ppo_loss_numpy_biased_std(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                              clip_coef, vf_coef, ent_coef):
    """NumPy statistics with the biased std (np.std's default)."""
    a = advantages.detach().numpy()
    advantages = (advantages - float(a.mean())) / (float(a.std()) + 1e-8)
    return (clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_coef) - ent_coef * entropy.mean()
            + vf_coef * value_loss(new_values, old_values, returns, clip_coef))


def ppo_loss_float64(*args):
    tensors = [t.double() for t in args[:7]]
    return ppo_loss(*tensors, *args[7:]).float()


def approx_kl_expm1(new_logprobs, old_logprobs):
    logratio = new_logprobs - old_logprobs
    return (torch.expm1(logratio) - logratio).mean()


def approx_kl_numpy(new_logprobs, old_logprobs):
    logratio = (new_logprobs - old_logprobs).detach().numpy().astype(np.float64)
    return torch.as_tensor(np.mean(np.expm1(logratio) - logratio))


UNUSUAL = {
    "surrogate_where": (check_clipped_surrogate, surrogate_where),
    "surrogate_float64": (check_clipped_surrogate, surrogate_float64),
    "surrogate_detached_constants": (check_clipped_surrogate, surrogate_detached_constants),
    "value_where": (check_value_loss, value_where),
    "ppo_loss_detached_constants": (check_ppo_loss, ppo_loss_detached_constants),
    "ppo_loss_item_statistics": (check_ppo_loss, ppo_loss_item_statistics),
    "ppo_loss_numpy_biased_std": (check_ppo_loss, ppo_loss_numpy_biased_std),
    "ppo_loss_float64": (check_ppo_loss, ppo_loss_float64),
    "approx_kl_expm1": (check_approx_kl, approx_kl_expm1),
    "approx_kl_numpy": (check_approx_kl, approx_kl_numpy),
}


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_correct_implementations_pass(name):
    check, implementation = UNUSUAL[name]
    result = check(implementation, quiet=True)
    assert result.status == "pass", result.message


def test_only_the_inputs_that_carry_gradient_are_compared():
    """A loss whose constant inputs are cut from the graph has the reference's gradient where it matters."""
    spy = []

    def recording(*args):
        spy.append([t.requires_grad for t in args[:7]])
        return ppo_loss(*args)

    assert check_ppo_loss(recording, quiet=True)
    assert all(flags[1] is False and flags[2] is False and flags[4] is False and flags[5] is False for flags in spy)


def test_a_wrong_total_is_localised_to_its_term_and_sample():
    def wrong_value_term(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                         clip_coef, vf_coef, ent_coef):
        returns = returns.clone()
        returns[5] += 1.0  # one target off
        return ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy, clip_coef,
                        vf_coef, ent_coef)

    result = check_ppo_loss(wrong_value_term, quiet=True)
    assert result.status == "fail"
    assert "the value term differs: raising vf_coef from 0 to 1 adds" in result.message
    assert "its gradient with respect to new_values first differs at sample 5" in result.message
    assert "policy term differs" not in result.message


def test_time_per_check():
    import time

    for check, reference in CHECKS.values():
        start = time.perf_counter()
        check(reference, quiet=True)
        assert time.perf_counter() - start < 1.0
