"""The bug catalogue, ex04: realistic broken PPO losses, each caught by its check with its specific diagnosis.

Every test here is a deliberately broken implementation; ``pytest -k bug`` selects exactly this
catalogue (and ex05's), so nothing else in these files may carry that word.
"""

import pytest
import torch

from ppo_course.checks import check_approx_kl, check_clipped_surrogate, check_ppo_loss, check_value_loss

from conftest import assert_caught
from test_checks_loss import clipped_surrogate, value_loss


# ---------------------------------------------------------------- clipped surrogate
def test_bug_surrogate_wrong_sign():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()  # maximised, not minimised

    assert_caught(check_clipped_surrogate(broken, quiet=True),
                  "the policy loss has the wrong sign: minimising it would make good actions less likely")


def test_bug_surrogate_max_instead_of_min():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.max(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "you took max instead of min of the two surrogates")


def test_bug_surrogate_clips_advantages():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.min(ratio * adv, ratio * torch.clamp(adv, 1 - eps, 1 + eps)).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "clipped the advantages instead of the ratio")


def test_bug_surrogate_ratio_of_logprobs():
    def broken(new, old, adv, eps):
        ratio = new / old  # "ratio of the probabilities"
        return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "ratio is computed as new_logprobs / old_logprobs")


def test_bug_surrogate_inverted_ratio():
    def broken(new, old, adv, eps):
        ratio = torch.exp(old - new)
        return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "the ratio is inverted")


def test_bug_surrogate_one_sided_clamp():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.min(ratio * adv, torch.clamp(ratio, max=1 + eps) * adv).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "clamped on one side only")


def test_bug_surrogate_sum_over_batch():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).sum()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "summed over the batch instead of taking the mean")


def test_bug_surrogate_no_mean():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)  # per-sample losses

    assert_caught(check_clipped_surrogate(broken, quiet=True), "did you forget .mean()")


def test_bug_surrogate_detached_ratio():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old).detach()  # "the ratio is just a weight"
        return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "carries no gradient to new_logprobs")


def test_bug_surrogate_min_of_means():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.min((ratio * adv).mean(), (torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean())

    assert_caught(check_clipped_surrogate(broken, quiet=True), "you took the min of the two batch means")


def test_bug_surrogate_clips_the_product():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        return -torch.min(ratio * adv, torch.clamp(ratio * adv, 1 - eps, 1 + eps)).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "you clipped the product r·A instead of the ratio")


def test_bug_surrogate_detached_inside_the_clamp():
    def broken(new, old, adv, eps):
        ratio = torch.exp(new - old)
        clipped = torch.clamp(ratio.detach(), 1 - eps, 1 + eps) * adv  # "the clipped term is a constant anyway"
        return -torch.min(ratio * adv, clipped).mean()

    assert_caught(check_clipped_surrogate(broken, quiet=True), "the ratio is detached inside the clamp")


# ---------------------------------------------------------------- value loss
def test_bug_value_min_instead_of_max():
    def broken(new, old, ret, eps=None):
        clipped = old + torch.clamp(new - old, -eps, eps)
        return 0.5 * torch.min((new - ret) ** 2, (clipped - ret) ** 2).mean()

    assert_caught(check_value_loss(broken, quiet=True), "you took min instead of max")


def test_bug_value_clipped_around_returns():
    def broken(new, old, ret, eps=None):
        clipped = ret + torch.clamp(new - ret, -eps, eps)
        return 0.5 * torch.max((new - ret) ** 2, (clipped - ret) ** 2).mean()

    assert_caught(check_value_loss(broken, quiet=True), "clipped around the returns instead of around the old values")


def test_bug_value_missing_half():
    def broken(new, old, ret, eps=None):
        clipped = old + torch.clamp(new - old, -eps, eps)
        return torch.max((new - ret) ** 2, (clipped - ret) ** 2).mean()

    assert_caught(check_value_loss(broken, quiet=True), "the 0.5 factor is missing")


def test_bug_value_broadcast_column():
    def broken(new, old, ret, eps=None):
        new, old = new.unsqueeze(-1), old.unsqueeze(-1)  # a critic output of shape (batch, 1)
        clipped = old + torch.clamp(new - old, -eps, eps)
        return 0.5 * torch.max((new - ret) ** 2, (clipped - ret) ** 2).mean()

    assert_caught(check_value_loss(broken, quiet=True), "broadcasts to (batch, batch)")


def test_bug_value_clip_coef_none_not_handled():
    def broken(new, old, ret, eps):  # no default, and None reaches torch.clamp
        clipped = old + torch.clamp(new - old, -eps, eps)
        return 0.5 * torch.max((new - ret) ** 2, (clipped - ret) ** 2).mean()

    assert_caught(check_value_loss(broken, quiet=True), "clip_coef defaults to None, which means no clipping")


def test_bug_value_clip_coef_none_clips_anyway():
    def broken(new, old, ret, eps=None):
        eps = eps or 0.2  # a "sensible default" instead of no clipping
        clipped = old + torch.clamp(new - old, -eps, eps)
        return 0.5 * torch.max((new - ret) ** 2, (clipped - ret) ** 2).mean()

    assert_caught(check_value_loss(broken, quiet=True), "clip_coef=None means no clipping")


def test_bug_value_max_of_means():
    def broken(new, old, ret, eps=None):
        clipped = old + torch.clamp(new - old, -eps, eps)
        return 0.5 * torch.max(((new - ret) ** 2).mean(), ((clipped - ret) ** 2).mean())

    assert_caught(check_value_loss(broken, quiet=True), "you took the max of the two batch means")


def test_bug_value_new_and_old_swapped():
    def broken(old, new, ret, eps=None):  # the parameters in the wrong order
        return value_loss(new, old, ret, eps)

    assert_caught(check_value_loss(broken, quiet=True), "new_values and old_values are swapped")


# ---------------------------------------------------------------- total loss
def _total(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2, *, entropy_sign=-1.0, normalise=True,
           swap=False, recompute_returns=False):
    if normalise:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    if recompute_returns:
        ret = adv + new_v  # "the return is the advantage plus the value"
    if swap:
        vf, c2 = c2, vf
    return (clipped_surrogate(new_lp, old_lp, adv, clip) + entropy_sign * c2 * ent.mean()
            + vf * value_loss(new_v, old_v, ret, clip))


def test_bug_loss_entropy_wrong_sign():
    assert_caught(check_ppo_loss(lambda *a: _total(*a, entropy_sign=+1.0), quiet=True),
                  "entropy bonus has the wrong sign: minimising this loss would make the policy less random")


def test_bug_loss_advantages_not_normalised():
    assert_caught(check_ppo_loss(lambda *a: _total(*a, normalise=False), quiet=True),
                  "the advantages are not normalised")


def test_bug_loss_coefficients_swapped():
    assert_caught(check_ppo_loss(lambda *a: _total(*a, swap=True), quiet=True), "the coefficients are swapped")


def test_bug_loss_value_targets_not_detached():
    assert_caught(check_ppo_loss(lambda *a: _total(*a, recompute_returns=True), quiet=True),
                  "value targets are not detached")


def test_bug_loss_policy_term_wrong_sign():
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy = -clipped_surrogate(new_lp, old_lp, adv, clip)  # "PPO maximises the surrogate"
        return policy - c2 * ent.mean() + vf * value_loss(new_v, old_v, ret, clip)

    assert_caught(check_ppo_loss(broken, quiet=True), "the policy term has the wrong sign")


def test_bug_loss_entropy_summed():
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return clipped_surrogate(new_lp, old_lp, adv, clip) - c2 * ent.sum() + vf * value_loss(new_v, old_v, ret, clip)

    assert_caught(check_ppo_loss(broken, quiet=True), "the entropy is summed over the batch")


def test_bug_loss_value_not_clipped():
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return clipped_surrogate(new_lp, old_lp, adv, clip) - c2 * ent.mean() + vf * value_loss(new_v, old_v, ret)

    assert_caught(check_ppo_loss(broken, quiet=True), "the value loss is not clipped")


def test_bug_loss_returns_normalised_too():
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ret = (ret - ret.mean()) / (ret.std() + 1e-8)  # "normalise the targets as well"
        return clipped_surrogate(new_lp, old_lp, adv, clip) - c2 * ent.mean() + vf * value_loss(new_v, old_v, ret, clip)

    assert_caught(check_ppo_loss(broken, quiet=True), "the returns are normalised too")


def test_bug_loss_entropy_detached():
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return (clipped_surrogate(new_lp, old_lp, adv, clip) - c2 * ent.mean().detach()
                + vf * value_loss(new_v, old_v, ret, clip))

    assert_caught(check_ppo_loss(broken, quiet=True), "the entropy bonus carries no gradient to entropy")


def test_bug_loss_two_mistakes_get_the_localisation():
    """Unnormalised advantages and a doubled entropy bonus: no single mistake reproduces the loss, so the check
    says which term differs and at which sample its gradient first does."""
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        return clipped_surrogate(new_lp, old_lp, adv, clip) - 2 * c2 * ent.mean() + vf * value_loss(new_v, old_v, ret,
                                                                                                      clip)

    result = check_ppo_loss(broken, quiet=True)
    assert_caught(result, "the policy term differs: your ppo_loss with vf_coef = ent_coef = 0 gives")
    assert "its gradient with respect to new_logprobs first differs at sample" in result.message
    assert "none of the" in result.message


@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
def test_bug_loss_nan_for_single_sample():
    def broken(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # std of one sample is NaN
        return clipped_surrogate(new_lp, old_lp, adv, clip) - c2 * ent.mean() + vf * value_loss(new_v, old_v, ret,
                                                                                                 clip)

    assert_caught(check_ppo_loss(broken, quiet=True), "a minibatch of one sample gives a non-finite loss")


# ---------------------------------------------------------------- approx KL
@pytest.mark.parametrize("estimator, phrase", [
    (lambda new, old: (old - new).mean(), "naive estimator mean(old - new)"),
    (lambda new, old: ((torch.exp(old - new) - 1) - (old - new)).mean(), "the ratio is inverted"),
    (lambda new, old: 0.5 * ((new - old) ** 2).mean(), "that is the k2 estimator"),
    (lambda new, old: ((torch.exp(new - old) - 1) - (new - old)).sum(), "you summed over the batch"),
], ids=["naive", "inverted", "k2", "sum"])
def test_bug_approx_kl(estimator, phrase):
    assert_caught(check_approx_kl(estimator, quiet=True), phrase)
