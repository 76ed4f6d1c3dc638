"""Bug catalogue, ex01-ex02: realistic broken networks and samplers, each caught by its check with
its specific diagnosis (selected by ``pytest -k bug``)."""

import math

import torch
from torch import nn
from torch.distributions import Categorical

from ppo_course.checks import check_actor_critic, check_layer_init, check_policy_network, check_sampling
from ppo_course.networks import layer_init

from conftest import assert_caught
from test_checks_networks import ActorCritic, PolicyNetwork


# -- ex01 task 1: PolicyNetwork -----------------------------------------------------------------
def test_bug_policy_network_returns_probabilities():
    class Net(PolicyNetwork):
        def forward(self, obs):
            return torch.softmax(self.net(obs), dim=-1)

    assert_caught(check_policy_network(Net, quiet=True), "forward returns probabilities (rows sum to 1)")


def test_bug_policy_network_squashes_its_logits():
    """A tanh on the output layer bounds the logits to [-1, 1]: with 7 actions the most a policy can then give
    one action is e / (e + 6 / e) = 0.55, however long it trains."""
    class Net(PolicyNetwork):
        def forward(self, obs):
            return torch.tanh(self.net(obs))

    assert_caught(check_policy_network(Net, quiet=True), "the policy cannot become sure of an action")


def test_bug_policy_network_without_activations():
    class Net(nn.Module):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(obs_dim, hidden_size), nn.Linear(hidden_size, hidden_size),
                                     nn.Linear(hidden_size, n_actions))

        def forward(self, obs):
            return self.net(obs)

    assert_caught(check_policy_network(Net, quiet=True), "forward is linear in the observation")


def test_bug_policy_network_ignores_hidden_size():
    class Net(PolicyNetwork):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__(obs_dim, n_actions, hidden_size=64)

    assert_caught(check_policy_network(Net, quiet=True), "hidden_size is ignored")


def test_bug_policy_network_layer_never_used():
    class Net(nn.Module):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__()
            self.fc1 = nn.Linear(obs_dim, hidden_size)
            self.fc2 = nn.Linear(hidden_size, hidden_size)
            self.out = nn.Linear(hidden_size, n_actions)

        def forward(self, obs):
            return self.out(torch.tanh(self.fc1(obs)))  # fc2 forgotten

    assert_caught(check_policy_network(Net, quiet=True), "gets no gradient")


def test_bug_policy_network_detached_logits():
    class Net(PolicyNetwork):
        def forward(self, obs):
            return self.net(obs).detach()  # "logits are just numbers"

    assert_caught(check_policy_network(Net, quiet=True), "forward's logits carry no gradient")


def test_bug_policy_network_activation_forgotten_between_two_layers():
    class Net(nn.Module):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(obs_dim, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size),
                                     nn.Linear(hidden_size, n_actions))  # the second nn.Tanh() forgotten

        def forward(self, obs):
            return self.net(obs)

    assert_caught(check_policy_network(Net, quiet=True), "two nn.Linear layers in a row ('net.2' then 'net.3')")


# -- ex01 task 2: sample_and_score --------------------------------------------------------------
def test_bug_sampling_gathers_raw_logits():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        if action is None:
            action = dist.sample()
        logprob = logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)  # log of exp(logits), unnormalised
        return action, logprob, dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "log-probs come from unnormalised probabilities")


def test_bug_sampling_returns_probabilities():
    def sample_and_score(logits, action=None, deterministic=False):
        probs = torch.softmax(logits, dim=-1)
        if action is None:
            action = torch.multinomial(probs, 1).squeeze(-1)
        return action, probs.gather(-1, action.unsqueeze(-1)).squeeze(-1), Categorical(logits=logits).entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "returned probabilities instead of log-probabilities")


def test_bug_sampling_softmax_over_batch_dimension():
    def sample_and_score(logits, action=None, deterministic=False):
        log_probs = torch.log_softmax(logits, dim=0)
        dist = Categorical(logits=log_probs)
        if action is None:
            action = dist.sample()
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "softmax over the wrong dimension (dim=0, the batch)")


def test_bug_sampling_takes_argmax():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        if action is None:
            action = logits.argmax(dim=-1)
        return action, dist.log_prob(action), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "argmax instead of sampling")


def test_bug_sampling_uniform_actions():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        if action is None:
            action = torch.randint(0, logits.shape[-1], (logits.shape[0],))
        return action, dist.log_prob(action), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "actions are uniformly random")


def test_bug_sampling_entropy_wrong_sign():
    def sample_and_score(logits, action=None, deterministic=False):
        log_probs = torch.log_softmax(logits, dim=-1)
        if action is None:
            action = Categorical(logits=logits).sample()
        entropy = (log_probs.exp() * log_probs).sum(-1)  # missing minus
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1), entropy

    assert_caught(check_sampling(sample_and_score, quiet=True), "entropy has the wrong sign")


def test_bug_sampling_entropy_not_summed():
    def sample_and_score(logits, action=None, deterministic=False):
        log_probs = torch.log_softmax(logits, dim=-1)
        if action is None:
            action = Categorical(logits=logits).sample()
        entropy = -(log_probs.exp() * log_probs)  # per action, never summed
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1), entropy

    assert_caught(check_sampling(sample_and_score, quiet=True), "not summed over actions")


def test_bug_sampling_entropy_averaged():
    def sample_and_score(logits, action=None, deterministic=False):
        log_probs = torch.log_softmax(logits, dim=-1)
        if action is None:
            action = Categorical(logits=logits).sample()
        entropy = -(log_probs.exp() * log_probs).mean(-1)
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1), entropy

    assert_caught(check_sampling(sample_and_score, quiet=True), "averaged over actions instead of summed")


def test_bug_sampling_actions_shape_batch_by_one():
    def sample_and_score(logits, action=None, deterministic=False):
        log_probs = torch.log_softmax(logits, dim=-1)
        if action is None:
            action = torch.multinomial(log_probs.exp(), 1)  # (batch, 1)
        return action, log_probs.gather(-1, action), Categorical(logits=logits).entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "shape (batch, 1)")


def test_bug_sampling_bare_squeeze():
    def sample_and_score(logits, action=None, deterministic=False):
        log_probs = torch.log_softmax(logits, dim=-1)
        if action is None:
            action = torch.multinomial(log_probs.exp(), 1)
        return action.squeeze(), log_probs.gather(-1, action).squeeze(), Categorical(logits=logits).entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "dropped the batch axis")


def test_bug_sampling_naive_softmax_overflows():
    def sample_and_score(logits, action=None, deterministic=False):
        probs = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
        if action is None:
            action = Categorical(logits=logits).sample()
        log_probs = torch.log(probs)
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1), Categorical(logits=logits).entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "exp(logits) overflowed")


def test_bug_sampling_detached_logprob():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits.detach())
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), Categorical(logits=logits).entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "logprob is detached from the logits")


def test_bug_sampling_resamples_given_actions():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        action = dist.sample()  # the given actions are thrown away
        return action, dist.log_prob(action), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "you sampled new ones")


def test_bug_sampling_scores_a_fresh_sample_for_given_actions():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        sampled = dist.sample()
        action = sampled if action is None else action
        return action, dist.log_prob(sampled), dist.entropy()  # the sample's log-prob, whatever was given

    assert_caught(check_sampling(sample_and_score, quiet=True), "those of freshly sampled actions")


def test_bug_sampling_deterministic_ignored():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        if action is None:
            action = dist.sample()  # deterministic never looked at
        return action, dist.log_prob(action), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "deterministic=True is ignored")


def test_bug_sampling_deterministic_replaces_given_actions():
    def sample_and_score(logits, action=None, deterministic=False):
        dist = Categorical(logits=logits)
        if deterministic:
            action = logits.argmax(dim=-1)
        elif action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "deterministic=True must not replace them")


def test_bug_sampling_without_the_packages_signature():
    def sample_and_score(logits):  # sampling only: no action to score, no deterministic
        dist = Categorical(logits=logits)
        action = dist.sample()
        return action, dist.log_prob(action), dist.entropy()

    assert_caught(check_sampling(sample_and_score, quiet=True), "keep the signature")


# -- ex02 task 1: layer_init --------------------------------------------------------------------
def test_bug_layer_init_keeps_default_weights():
    def layer_init_(layer, std=math.sqrt(2), bias_const=0.0):
        nn.init.constant_(layer.bias, bias_const)
        return layer

    assert_caught(check_layer_init(layer_init_, quiet=True), "weights were not changed")


def test_bug_layer_init_gaussian_weights():
    def layer_init_(layer, std=math.sqrt(2), bias_const=0.0):
        nn.init.normal_(layer.weight, 0.0, std / math.sqrt(layer.weight[0].numel()))
        if layer.bias is not None:
            nn.init.constant_(layer.bias, bias_const)
        return layer

    assert_caught(check_layer_init(layer_init_, quiet=True), "weights are not orthogonal")


def test_bug_layer_init_ignores_gain():
    def layer_init_(layer, std=math.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, bias_const)
        return layer

    assert_caught(check_layer_init(layer_init_, quiet=True), "gain ignored")


def test_bug_layer_init_leaves_bias():
    def layer_init_(layer, std=math.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        return layer

    assert_caught(check_layer_init(layer_init_, quiet=True), "bias not set")


def test_bug_layer_init_returns_nothing():
    def layer_init_(layer, std=math.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)

    assert_caught(check_layer_init(layer_init_, quiet=True), "returned None")


def test_bug_layer_init_crashes_without_bias():
    def layer_init_(layer, std=math.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
        return layer

    assert_caught(check_layer_init(layer_init_, quiet=True), "fails on a layer without a bias")


# -- ex02 task 2: ActorCritic -------------------------------------------------------------------
def test_bug_actor_critic_squashes_its_logits():
    class Net(ActorCritic):
        def get_action_and_value(self, x, action=None):
            dist = Categorical(logits=torch.tanh(self.actor(x)))  # bounded logits: never sure of anything
            if action is None:
                action = dist.sample()
            return action, dist.log_prob(action), dist.entropy(), self.get_value(x)

    assert_caught(check_actor_critic(Net, quiet=True), "the policy cannot become sure of an action")


def test_bug_actor_critic_value_not_squeezed():
    class Agent(ActorCritic):
        def get_value(self, x):
            return self.critic(x)

    assert_caught(check_actor_critic(Agent, quiet=True), "broadcasts to a (batch, batch) matrix")


def test_bug_actor_critic_value_bare_squeeze():
    class Agent(ActorCritic):
        def get_value(self, x):
            return self.critic(x).squeeze()

    assert_caught(check_actor_critic(Agent, quiet=True), "dropped the batch axis")


def test_bug_actor_critic_resamples_given_action():
    class Agent(ActorCritic):
        def get_action_and_value(self, x, action=None):
            dist = Categorical(logits=self.actor(x))
            action = dist.sample()  # ignores the stored action
            return action, dist.log_prob(action), dist.entropy(), self.get_value(x)

    assert_caught(check_actor_critic(Agent, quiet=True), "you sampled a new one")


def test_bug_actor_critic_scores_a_fresh_sample():
    class Agent(ActorCritic):
        def get_action_and_value(self, x, action=None):
            dist = Categorical(logits=self.actor(x))
            sampled = dist.sample()
            return (sampled if action is None else action), dist.log_prob(sampled), dist.entropy(), self.get_value(x)

    assert_caught(check_actor_critic(Agent, quiet=True), "the log-prob returned is not that action's")


def test_bug_actor_critic_default_policy_head_init():
    class Agent(ActorCritic):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__(obs_dim, n_actions, hidden_size)
            self.actor[-1] = nn.Linear(hidden_size, n_actions)  # PyTorch's default init

    assert_caught(check_actor_critic(Agent, quiet=True), "the initial policy is not near-uniform")


def test_bug_actor_critic_value_head_small_gain():
    class Agent(ActorCritic):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__(obs_dim, n_actions, hidden_size)
            self.critic[-1] = layer_init(nn.Linear(hidden_size, 1), std=0.01)  # copy-pasted policy gain

    assert_caught(check_actor_critic(Agent, quiet=True), "value head gain")


def test_bug_actor_critic_shared_trunk():
    class Agent(ActorCritic):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__(obs_dim, n_actions, hidden_size)
            self.critic = nn.Sequential(*self.actor[:4], layer_init(nn.Linear(hidden_size, 1), std=1.0))

    assert_caught(check_actor_critic(Agent, quiet=True), "actor and critic share parameters")


def test_bug_actor_critic_value_without_gradient():
    class Agent(ActorCritic):
        def get_value(self, x):
            with torch.no_grad():
                return self.critic(x).squeeze(-1)

    assert_caught(check_actor_critic(Agent, quiet=True), "no gradient reaches the value head")


def test_bug_actor_critic_entropy_detached():
    class Agent(ActorCritic):
        def get_action_and_value(self, x, action=None):
            action, logprob, entropy, value = super().get_action_and_value(x, action)
            return action, logprob, entropy.detach(), value  # "the entropy is only logged"

    assert_caught(check_actor_critic(Agent, quiet=True), "the entropy returned by get_action_and_value carries no "
                  "gradient")


def test_bug_actor_critic_value_detached_in_get_action_and_value():
    class Agent(ActorCritic):
        def get_action_and_value(self, x, action=None):
            action, logprob, entropy, value = super().get_action_and_value(x, action)
            return action, logprob, entropy, value.detach()  # "the value is stored in the rollout"

    assert_caught(check_actor_critic(Agent, quiet=True), "the value returned by get_action_and_value carries no "
                  "gradient to the value head")


def test_bug_actor_critic_critic_activation_forgotten():
    class Agent(ActorCritic):
        def __init__(self, obs_dim, n_actions, hidden_size=64):
            super().__init__(obs_dim, n_actions, hidden_size)
            self.critic = nn.Sequential(self.critic[0], self.critic[1], self.critic[2], self.critic[4])

    assert_caught(check_actor_critic(Agent, quiet=True), "two nn.Linear layers in a row ('critic.2' then "
                  "'critic.3')")
