"""GAE against values worked out by hand, including a termination, a truncation and the rollout cut."""

import pytest
import torch

from ppo_course.advantages import compute_gae, discounted_returns


def col(*xs):
    """A (T, 1) float tensor: one environment."""
    return torch.tensor(xs, dtype=torch.float32).unsqueeze(1)


def test_gae_single_step_is_td_error():
    adv, ret = compute_gae(col(1.0), col(0.5), col(0.0), col(0.0), torch.tensor([2.0]), gamma=0.9, gae_lambda=0.95)
    # delta = 1 + 0.9 * 2 - 0.5
    assert adv.item() == pytest.approx(2.3)
    assert ret.item() == pytest.approx(2.8)


def test_gae_bootstraps_at_the_rollout_cut():
    g, lam = 0.9, 0.8
    r, v, nv = [1.0, 2.0], [0.5, 1.0], 3.0
    d1 = r[1] + g * nv - v[1]
    d0 = r[0] + g * v[1] - v[0]
    adv, ret = compute_gae(col(*r), col(*v), col(0, 0), col(0, 0), torch.tensor([nv]), gamma=g, gae_lambda=lam)
    assert adv[:, 0].tolist() == pytest.approx([d0 + g * lam * d1, d1])
    assert ret[:, 0].tolist() == pytest.approx([d0 + g * lam * d1 + v[0], d1 + v[1]])


def test_termination_stops_bootstrap_and_propagation():
    g, lam = 0.9, 0.8
    r, v, nv = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], 4.0
    # episode terminates at t=1; t=2 starts a new episode and is cut by the rollout end
    d2 = r[2] + g * nv - v[2]
    d1 = r[1] - v[1]  # no V(s') after a termination
    d0 = r[0] + g * v[1] - v[0]
    adv, _ = compute_gae(col(*r), col(*v), col(0, 1, 0), col(0, 0, 0), torch.tensor([nv]), gamma=g, gae_lambda=lam)
    assert adv[:, 0].tolist() == pytest.approx([d0 + g * lam * d1, d1, d2])


def test_truncation_bootstraps_from_the_final_observation():
    g, lam = 0.9, 0.8
    r, v, nv, final = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], 4.0, 10.0
    d2 = r[2] + g * nv - v[2]
    d1 = r[1] + g * final - v[1]  # bootstrapped from V(final obs), not from values[2] (next episode)
    d0 = r[0] + g * v[1] - v[0]
    final_values = col(0.0, final, 0.0)
    adv, _ = compute_gae(col(*r), col(*v), col(0, 0, 0), col(0, 1, 0), torch.tensor([nv]), final_values,
                         gamma=g, gae_lambda=lam)
    # the advantage does not propagate backwards across the episode boundary either
    assert adv[:, 0].tolist() == pytest.approx([d0 + g * lam * d1, d1, d2])


def test_truncation_at_the_last_step_uses_final_value_not_next_value():
    adv, _ = compute_gae(col(1.0), col(0.0), col(0.0), col(1.0), torch.tensor([100.0]), col(2.0),
                         gamma=0.5, gae_lambda=1.0)
    assert adv.item() == pytest.approx(1.0 + 0.5 * 2.0)


def test_termination_at_the_last_step_ignores_next_value():
    adv, _ = compute_gae(col(1.0), col(0.25), col(1.0), col(0.0), torch.tensor([100.0]), gamma=0.5, gae_lambda=1.0)
    assert adv.item() == pytest.approx(0.75)


@pytest.mark.parametrize("gae_lambda", [0.0, 0.5, 1.0])
def test_environments_are_independent(gae_lambda):
    torch.manual_seed(0)
    r, v = torch.randn(5, 3), torch.randn(5, 3)
    term = torch.zeros(5, 3)
    term[2, 1] = 1
    nv = torch.randn(3)
    adv, _ = compute_gae(r, v, term, torch.zeros(5, 3), nv, gamma=0.99, gae_lambda=gae_lambda)
    for i in range(3):
        single, _ = compute_gae(r[:, i:i + 1], v[:, i:i + 1], term[:, i:i + 1], torch.zeros(5, 1), nv[i:i + 1],
                                gamma=0.99, gae_lambda=gae_lambda)
        assert torch.allclose(adv[:, i], single[:, 0])


def test_lambda_one_gives_discounted_return_minus_value():
    torch.manual_seed(1)
    r, v = torch.randn(6, 2), torch.randn(6, 2)
    dones = torch.zeros(6, 2)
    dones[3, 0] = 1
    nv = torch.randn(2)
    adv, ret = compute_gae(r, v, dones, torch.zeros(6, 2), nv, gamma=0.9, gae_lambda=1.0)
    assert torch.allclose(ret, discounted_returns(r, dones, 0.9, next_value=nv), atol=1e-5)


def test_lambda_zero_gives_one_step_td_errors():
    r, v, nv = col(1.0, 2.0, 3.0), col(0.1, 0.2, 0.3), torch.tensor([0.4])
    adv, _ = compute_gae(r, v, col(0, 0, 0), col(0, 0, 0), nv, gamma=0.5, gae_lambda=0.0)
    expected = [1 + 0.5 * 0.2 - 0.1, 2 + 0.5 * 0.3 - 0.2, 3 + 0.5 * 0.4 - 0.3]
    assert adv[:, 0].tolist() == pytest.approx(expected)


def test_discounted_returns_by_hand():
    out = discounted_returns(torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 0.0, 0.0]), 0.5)
    assert out.tolist() == pytest.approx([1.5, 1.0, 1.5, 1.0])


def test_errors_are_clear():
    with pytest.raises(ValueError, match="final_values"):
        compute_gae(col(1.0), col(0.0), col(0.0), col(1.0), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="shape"):
        compute_gae(col(1.0, 2.0), col(0.0), col(0.0), col(0.0), torch.tensor([0.0]))
