"""The ex01/ex02 checks: every reference implementation passes, stubs say "not implemented yet",
other exceptions name the learner's line, and results are deterministic."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from ppo_course.checks import check_actor_critic, check_layer_init, check_policy_network, check_sampling
from ppo_course.networks import layer_init
from ppo_course.networks import sample_and_score as package_sample_and_score


# -- reference implementations (the solution notebooks' code) ------------------------------------
class PolicyNetwork(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.net = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
            layer_init(nn.Linear(hidden_size, n_actions), std=0.01),
        )

    def forward(self, obs):
        return self.net(obs)


def sample_and_score(logits, action=None, deterministic=False):
    dist = Categorical(logits=logits)
    if action is None:
        action = logits.argmax(dim=-1) if deterministic else dist.sample()
    return action, dist.log_prob(action), dist.entropy()


def reference_layer_init(layer, std=math.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, bias_const)
    return layer


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
            layer_init(nn.Linear(hidden_size, n_actions), std=0.01),
        )

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def get_action_and_value(self, x, action=None):
        dist = Categorical(logits=self.actor(x))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(x)


CASES = [
    (check_policy_network, PolicyNetwork),
    (check_sampling, sample_and_score),
    (check_sampling, package_sample_and_score),
    (check_layer_init, reference_layer_init),
    (check_layer_init, layer_init),
    (check_actor_critic, ActorCritic),
]
IDS = ["policy_network", "sampling", "package_sampling", "layer_init", "package_layer_init", "actor_critic"]


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_reference_passes(check, reference):
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message
    assert result


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_deterministic(check, reference):
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_prints_a_tick_line(capsys):
    check_sampling(sample_and_score)
    assert capsys.readouterr().out.startswith("✓ sample_and_score:")


def test_stub_is_todo_with_its_hint():
    def stub(logits, action=None, deterministic=False):
        raise NotImplementedError("Categorical(logits=logits), then sample")

    result = check_sampling(stub, quiet=True)
    assert result.status == "todo"
    assert "Categorical(logits=logits), then sample" in result.message
    assert "not implemented yet" in str(result)


def test_stub_class_is_todo():
    class Stub(nn.Module):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__()
            raise NotImplementedError("two MLPs")

    for check in (check_policy_network, check_actor_critic):
        result = check(Stub, quiet=True)
        assert result.status == "todo" and "two MLPs" in result.message


def test_stub_todo_does_not_raise_in_strict_mode(monkeypatch):
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")

    def stub(layer, std=1.0, bias_const=0.0):
        raise NotImplementedError("orthogonal_")

    assert check_layer_init(stub, quiet=True).status == "todo"


def test_other_exception_is_error_with_the_learners_line():
    def broken(logits, action=None, deterministic=False):
        probs = torch.softmax(logits, -1)
        return probs[:, 7], probs, probs  # IndexError: only 4 actions

    result = check_sampling(broken, quiet=True)
    assert result.status == "error"
    assert "IndexError" in result.message and "line" in result.message
    assert "probs[:, 7]" in result.message
