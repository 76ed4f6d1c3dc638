"""Actor-critic networks for discrete actions.

The initialisation follows "The 37 Implementation Details of PPO" (Huang et al., 2022)
and CleanRL's ``ppo.py``: orthogonal weights, zero biases, gain sqrt(2) in hidden
layers, 0.01 for the policy head (so the initial policy is close to uniform: every
action gets explored) and 1.0 for the value head.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.distributions import Categorical

#: Gains used by :func:`layer_init` callers (Huang et al. 2022, detail 2).
HIDDEN_GAIN = math.sqrt(2)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


def layer_init(layer: nn.Module, std: float = HIDDEN_GAIN, bias_const: float = 0.0) -> nn.Module:
    """Orthogonally initialise ``layer.weight`` with gain ``std`` and set ``layer.bias`` to a constant.

    Works for ``nn.Linear`` and ``nn.Conv2d``. Returns the same layer, so it can wrap a
    constructor: ``layer_init(nn.Linear(64, 4), std=0.01)``.
    """
    nn.init.orthogonal_(layer.weight, std)
    if getattr(layer, "bias", None) is not None:
        nn.init.constant_(layer.bias, bias_const)
    return layer


class MLP(nn.Module):
    """``num_layers`` hidden layers ``x -> activation(W x + b)`` of width ``hidden_size``, sqrt(2)-initialised.

    Equivalent to ``nn.Sequential(Linear, Tanh, Linear, Tanh, ...)``; the forward pass calls
    ``F.linear`` on the layers' parameters instead of calling each layer as a module, because
    at rollout batch sizes (16 observations) nn.Module's per-call machinery costs more than
    the matrix multiplications themselves (``benchmarks/throughput.py`` measures the effect).
    """

    def __init__(self, in_dim: int, hidden_size: int, num_layers: int, activation=torch.tanh):
        super().__init__()
        self.layers = nn.ModuleList(
            layer_init(nn.Linear(in_dim if i == 0 else hidden_size, hidden_size)) for i in range(num_layers))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.activation(F.linear(x, layer.weight, layer.bias))
        return x


class ActionAndValue(NamedTuple):
    """What :meth:`MLPActorCritic.get_action_and_value` returns; each tensor has shape ``(batch,)``."""

    action: torch.Tensor  #: int64 action index
    logprob: torch.Tensor  #: float32 log pi(action | obs)
    entropy: torch.Tensor  #: float32 entropy of pi(. | obs), in nats
    value: torch.Tensor  #: float32 V(obs)


class MLPActorCritic(nn.Module):
    """Actor-critic for a flat observation vector and a discrete action space.

    Args:
        obs_dim: length of the observation vector (LunarLander: 8).
        n_actions: number of discrete actions (LunarLander: 4).
        hidden_size: width of each hidden layer.
        num_hidden_layers: hidden layers per trunk.
        shared_trunk: if True, actor and critic heads sit on one shared trunk (fewer
            parameters, but the value loss then shapes the policy's features too);
            if False (CleanRL's default), two separate MLPs.

    Shapes: observations ``(batch, obs_dim)`` float32; logits ``(batch, n_actions)``;
    values ``(batch,)``.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden_size: int = 64,
                 num_hidden_layers: int = 2, shared_trunk: bool = False):
        super().__init__()
        self.obs_dim, self.n_actions, self.shared_trunk = obs_dim, n_actions, shared_trunk
        self.obs_shape = (obs_dim,)
        self.actor_trunk = MLP(obs_dim, hidden_size, num_hidden_layers)
        self.critic_trunk = self.actor_trunk if shared_trunk else MLP(obs_dim, hidden_size, num_hidden_layers)
        self.actor_head = layer_init(nn.Linear(hidden_size, n_actions), std=POLICY_GAIN)
        self.critic_head = layer_init(nn.Linear(hidden_size, 1), std=VALUE_GAIN)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        """V(x): ``(batch, obs_dim)`` -> ``(batch,)``."""
        return self.critic_head(self.critic_trunk(x)).squeeze(-1)

    def get_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised action scores: ``(batch, obs_dim)`` -> ``(batch, n_actions)``."""
        return self.actor_head(self.actor_trunk(x))

    def get_distribution(self, x: torch.Tensor) -> Categorical:
        """pi(. | x) as a ``Categorical`` built from logits (log-softmax inside, numerically safe)."""
        return Categorical(logits=self.get_logits(x), validate_args=False)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False) -> ActionAndValue:
        """Sample (or score) actions and evaluate the critic in one pass.

        The arithmetic is the one ``Categorical(logits=...)`` does -- log-softmax by subtracting
        logsumexp, sampling from the softmax, gathering the chosen log-probability -- written out
        because this runs once per rollout step, where the distribution object's overhead would
        cost as much as the network. :meth:`get_distribution` gives the same numbers
        (``tests/test_networks.py`` checks it).

        Args:
            x: observations ``(batch, obs_dim)``, float32.
            action: if given, ``(batch,)`` int64 actions to score (the update phase);
                if None, actions are chosen (the rollout phase).
            deterministic: choose the argmax action instead of sampling.

        Returns:
            :class:`ActionAndValue` of ``(batch,)`` tensors.
        """
        if self.shared_trunk:
            hidden = self.actor_trunk(x)
            logits, value = self.actor_head(hidden), self.critic_head(hidden).squeeze(-1)
        else:
            logits, value = self.get_logits(x), self.get_value(x)
        log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
        probs = log_probs.exp()
        if action is None:
            action = logits.argmax(dim=-1) if deterministic else torch.multinomial(probs, 1).squeeze(-1)
        logprob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(probs * log_probs).sum(dim=-1)
        return ActionAndValue(action, logprob, entropy, value)

    @torch.no_grad()
    def act(self, x: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions only, without gradients: ``(batch, obs_dim)`` -> ``(batch,)`` int64."""
        logits = self.get_logits(x)
        if deterministic:
            return logits.argmax(dim=-1)
        return Categorical(logits=logits, validate_args=False).sample()


def build_agent(config, obs_shape: tuple[int, ...], n_actions: int) -> nn.Module:
    """The network a config asks for, for an observation shape and action count.

    Raises:
        ValueError: the observation is not a flat vector (pixel agents come with the Doom track).
    """
    if len(obs_shape) != 1:
        raise ValueError(f"MLPActorCritic needs a flat observation vector, got shape {obs_shape}")
    return MLPActorCritic(obs_shape[0], n_actions, hidden_size=config.hidden_size,
                          num_hidden_layers=config.num_hidden_layers, shared_trunk=config.shared_trunk)
