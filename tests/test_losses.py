"""The clipped surrogate, value loss and diagnostics on inputs worked out by hand."""

import math

import pytest
import torch

from ppo_course.losses import (approx_kl, clip_fraction, clipped_surrogate, explained_variance,
                               normalize_advantages, ppo_loss, value_loss)


def logp_pair(ratio):
    """(new, old) log-probs whose ratio is ``ratio``."""
    old = torch.tensor([math.log(0.5)])
    return old + math.log(ratio), old


@pytest.mark.parametrize("ratio, adv, expected", [
    # positive advantage: gain capped at (1 + eps) A once the ratio is above 1 + eps
    (1.1, 2.0, -2.2),
    (1.5, 2.0, -2.4),
    (0.5, 2.0, -1.0),   # below 1 - eps with A > 0: min picks the unclipped, smaller term
    # negative advantage: the penalty is not capped on the harmful side
    (0.9, -2.0, 1.8),
    (0.5, -2.0, 1.6),   # below 1 - eps with A < 0: clipped at (1 - eps) A
    (1.5, -2.0, 3.0),   # above 1 + eps with A < 0: min picks the unclipped, larger penalty
])
def test_clipped_surrogate_by_hand(ratio, adv, expected):
    new, old = logp_pair(ratio)
    loss = clipped_surrogate(new, old, torch.tensor([adv]), clip_coef=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_clipped_surrogate_has_no_gradient_where_clipped():
    new, old = logp_pair(1.5)
    new = new.clone().requires_grad_(True)
    clipped_surrogate(new, old, torch.tensor([2.0]), 0.2).backward()
    assert new.grad.item() == 0.0
    new2, old2 = logp_pair(1.1)
    new2 = new2.clone().requires_grad_(True)
    clipped_surrogate(new2, old2, torch.tensor([2.0]), 0.2).backward()
    assert new2.grad.item() == pytest.approx(-2.2, rel=1e-5)  # d(-r A)/d logp = -r A


def test_value_loss_plain_and_clipped():
    new, old, ret = torch.tensor([3.0]), torch.tensor([2.5]), torch.tensor([1.0])
    assert value_loss(new, None, ret).item() == pytest.approx(0.5 * 4.0)
    # clip_coef=None: unclipped, old_values unused
    assert value_loss(new, old, ret).item() == pytest.approx(0.5 * 4.0)
    # clipped value = 2.5 + clip(0.5, -0.2, 0.2) = 2.7 -> (2.7 - 1)^2 = 2.89 < 4, max keeps 4
    assert value_loss(new, old, ret, 0.2).item() == pytest.approx(2.0)
    # moving toward the target beyond the clip range: the clipped error (larger) counts
    new2 = torch.tensor([1.0])
    assert value_loss(new2, old, ret, 0.2).item() == pytest.approx(0.5 * (2.3 - 1.0) ** 2)


def test_value_loss_clipping_needs_old_values():
    with pytest.raises(ValueError, match="needs old_values"):
        value_loss(torch.tensor([3.0]), None, torch.tensor([1.0]), 0.2)


def test_approx_kl_known_values():
    new, old = torch.log(torch.tensor([0.5, 0.25])), torch.log(torch.tensor([0.25, 0.5]))
    r = torch.tensor([2.0, 0.5])
    expected = ((r - 1) - torch.log(r)).mean().item()
    assert approx_kl(new, old).item() == pytest.approx(expected)
    assert approx_kl(old, old).item() == 0.0


def test_clip_fraction_known_values():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.0, 1.1, 1.3, 0.7]))
    assert clip_fraction(new, old, 0.2).item() == pytest.approx(0.5)


def test_explained_variance_known_values():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, y.mean()), y) == pytest.approx(0.0)
    assert explained_variance(-y, y) < 0
    assert math.isnan(explained_variance(y, torch.ones(4)))


def test_normalize_advantages():
    a = normalize_advantages(torch.tensor([1.0, 2.0, 3.0]))
    assert a.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert a.std().item() == pytest.approx(1.0, rel=1e-4)
    assert normalize_advantages(torch.tensor([5.0])).item() == 0.0  # batch of one: centred, no NaN


def test_ppo_loss_combines_terms_with_the_right_signs():
    torch.manual_seed(0)
    new, old = torch.randn(8), torch.randn(8)
    adv, nv, ov, ret, ent = torch.randn(8), torch.randn(8), torch.randn(8), torch.randn(8), torch.rand(8)
    out = ppo_loss(new, old, adv, nv, ov, ret, ent, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01,
                   clip_vloss=False, norm_adv=False)
    assert out.loss.item() == pytest.approx(
        clipped_surrogate(new, old, adv, 0.2).item() - 0.01 * ent.mean().item() + 0.5 * value_loss(nv, ov, ret).item(),
        rel=1e-5)
