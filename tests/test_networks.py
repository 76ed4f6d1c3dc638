"""Initialisation gains, shapes, and the near-uniform initial policy."""

import math

import pytest
import torch
from torch import nn

from ppo_course.networks import MLPActorCritic, layer_init, sample_action


def test_layer_init_is_orthogonal_with_gain():
    layer = layer_init(nn.Linear(8, 8), std=2.0, bias_const=0.5)
    w = layer.weight.detach()
    assert torch.allclose(w @ w.T, 4.0 * torch.eye(8), atol=1e-5)
    assert torch.all(layer.bias == 0.5)


@pytest.mark.parametrize("shared", [False, True])
def test_shapes_and_initial_policy(shared):
    torch.manual_seed(0)
    agent = MLPActorCritic(8, 4, shared_trunk=shared)
    x = torch.randn(32, 8)
    out = agent.get_action_and_value(x)
    assert out.action.shape == out.logprob.shape == out.entropy.shape == out.value.shape == (32,)
    assert out.action.dtype == torch.int64
    # policy head gain 0.01: the initial policy is almost uniform over the 4 actions
    assert torch.allclose(out.entropy, torch.full((32,), math.log(4)), atol=1e-3)
    probs = agent.get_distribution(x).probs
    assert torch.allclose(probs, torch.full_like(probs, 0.25), atol=0.01)


def test_scoring_given_actions_matches_sampling():
    torch.manual_seed(0)
    agent = MLPActorCritic(8, 4)
    x = torch.randn(16, 8)
    sampled = agent.get_action_and_value(x)
    scored = agent.get_action_and_value(x, sampled.action)
    assert torch.equal(sampled.logprob, scored.logprob)


def test_shared_trunk_shares_parameters():
    assert sum(p.numel() for p in MLPActorCritic(8, 4, shared_trunk=True).parameters()) < \
        sum(p.numel() for p in MLPActorCritic(8, 4, shared_trunk=False).parameters())


def test_deterministic_is_argmax():
    agent = MLPActorCritic(8, 4)
    x = torch.randn(5, 8)
    assert torch.equal(agent.act(x, deterministic=True), agent.get_logits(x).argmax(-1))


def test_written_out_distribution_matches_categorical():
    torch.manual_seed(0)
    agent = MLPActorCritic(8, 4)
    with torch.no_grad():
        for layer in (agent.actor_head,):
            layer.weight.mul_(300)  # a sharp, far from uniform policy
    x = torch.randn(64, 8)
    out = agent.get_action_and_value(x)
    dist = agent.get_distribution(x)
    # log_softmax vs Categorical's logits - logsumexp: the same numbers up to float rounding
    assert torch.allclose(out.logprob, dist.log_prob(out.action), atol=1e-6)
    assert torch.allclose(out.entropy, dist.entropy(), atol=1e-6)
    # sampling follows the distribution: empirical frequencies match the probabilities
    xs = x[:1].expand(20000, 8)
    actions = agent.get_action_and_value(xs).action
    freq = torch.bincount(actions, minlength=4).float() / len(actions)
    assert torch.allclose(freq, dist.probs[0], atol=0.02)


def test_gumbel_max_sampler_follows_the_distribution():
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([[0.1, 0.6, 0.3, 0.0]])).expand(40000, 4)
    actions = sample_action(log_probs)
    freq = torch.bincount(actions, minlength=4).float() / len(actions)
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3, 0.0]), atol=0.01)
    assert freq[3] == 0  # probability 0 is never drawn
    assert torch.equal(sample_action(log_probs[:3], deterministic=True), torch.tensor([1, 1, 1]))
