"""Actor-critic networks: categorical policies for discrete actions, a Gaussian one for continuous actions.

* :class:`MLPActorCritic` -- flat observation vectors, ``Discrete`` actions (LunarLander).
* :class:`GaussianActorCritic` -- flat observation vectors, ``Box`` actions (Pendulum,
  LunarLanderContinuous, BipedalWalker): a diagonal Gaussian policy (CleanRL's
  ``ppo_continuous_action.py``; Spinning Up's ``MLPGaussianActor``).
* :class:`CNNActorCritic` -- stacked pixel frames through :class:`NatureCNN`; no memory beyond
  the frame stack (the control agent of the Doom track).
* :class:`RecurrentActorCritic` -- :class:`NatureCNN` -> LSTM -> actor and critic heads (CleanRL's
  ``ppo_atari_lstm.py``; sb3-contrib's RecurrentPPO).

The initialisation follows "The 37 Implementation Details of PPO" (Huang et al., 2022)
and CleanRL's ``ppo.py``: orthogonal weights, zero biases, gain sqrt(2) in hidden
layers, 0.01 for the policy head (so the initial policy is close to uniform: every
action gets explored) and 1.0 for the value head. The LSTM gets orthogonal weights with
gain 1 and zero biases, as in CleanRL's ``ppo_atari_lstm.py``.

Pixel observations are stored as uint8 (4x less memory than float32) and scaled to [0, 1]
inside :class:`NatureCNN`, on the way into the first convolution (dividing
by 255 in the environment wrapper instead would store float32 frames: doing it in the network keeps
rollout storage four times smaller).

**Observation normalisation** (``config.norm_obs``; flat observations only). During training the
vector env normalises (:class:`ppo_course.envs.lunar.NormalizeObservation`: running mean and
variance, clipped to +-10), so the buffer stores what the network saw and the first minibatch's
ratio is exactly 1. A trained agent, though, meets *raw* observations wherever it is used outside
training: evaluation, ``ppo-course play``, a notebook. Those paths all go through ``act()``, so the
agent carries the statistics itself: an :class:`ObsNormalizer` (buffers ``mean``, ``var``,
``count``, saved in the agent's ``state_dict`` and so in every checkpoint), applied by ``act()``
only and never updated there. The trainer copies the env's statistics into it after every update,
so evaluations during training use the run's statistics of that moment, and :func:`load_agent
<ppo_course.trainer.load_agent>` returns an agent that normalises by itself: no caller can forget
it. The other methods (``get_action_and_value``, ``get_value``, ``sample``) take observations as
the training env gives them, already normalised.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.distributions import Categorical, Normal

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


#: Normalised observations are clipped to [-OBS_CLIP, OBS_CLIP] (CleanRL's ``ppo_continuous_action.py``).
OBS_CLIP = 10.0
#: Added to the variance under the square root (Gymnasium's ``NormalizeObservation``).
OBS_EPSILON = 1e-8


class ObsNormalizer(nn.Module):
    """Frozen observation statistics: ``x -> clip((x - mean) / sqrt(var + epsilon), -clip, clip)``.

    The formula of the training env's :class:`~ppo_course.envs.lunar.NormalizeObservation`, with its
    running statistics copied in (:meth:`set_statistics`); nothing here updates them. ``mean``, ``var``
    and ``count`` are buffers, so they are part of the agent's ``state_dict`` and of its checkpoints.
    They are float64, as the env's running statistics are; the output is float32.

    Args:
        obs_dim: length of the observation vector.

    Shapes: ``(batch, obs_dim)`` -> ``(batch, obs_dim)`` float32.
    """

    def __init__(self, obs_dim: int, clip: float = OBS_CLIP, epsilon: float = OBS_EPSILON):
        super().__init__()
        self.clip, self.epsilon = clip, epsilon
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalized = (x.double() - self.mean) / torch.sqrt(self.var + self.epsilon)
        return normalized.clamp(-self.clip, self.clip).float()

    @torch.no_grad()
    def set_statistics(self, mean, var, count) -> None:
        """Copy running statistics in (arrays or tensors of shape ``(obs_dim,)``, and a scalar count)."""
        for name, value in (("mean", mean), ("var", var), ("count", count)):
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=torch.float64).reshape(buffer.shape))


def sample_action(log_probs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
    """One action per row of a batch of categorical distributions, by the Gumbel-max trick.

    ``argmax_a(log p_a + g_a)`` with independent standard Gumbel noise ``g_a = -log(E_a)``,
    ``E_a ~ Exponential(1)``, is distributed exactly as ``Categorical(p)`` (Gumbel 1954; Maddison
    et al. 2014, "A* Sampling"): three elementwise kernels and an argmax, cheaper than
    ``torch.multinomial`` at rollout batch sizes. It draws from PyTorch's global generator, so
    ``torch.manual_seed`` makes it reproducible.

    Args:
        log_probs: ``(batch, n_actions)`` float32 normalised log-probabilities (or logits: adding a
            constant per row changes nothing).
        deterministic: return the most probable action instead of a sample.

    Returns:
        ``(batch,)`` int64 action indices.
    """
    if deterministic:
        return log_probs.argmax(dim=-1)
    log_exponential = torch.empty_like(log_probs).exponential_().log()  # = -Gumbel noise
    return (log_probs - log_exponential).argmax(dim=-1)


def sample_and_score(logits: torch.Tensor, action: torch.Tensor | None = None,
                     deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(action, logprob, entropy)`` of the categorical distribution with these logits.

    The arithmetic ``Categorical(logits=...)`` does -- normalise to log-probabilities, sample,
    gather the chosen log-probability, entropy -- written out because this runs once per rollout
    step, where the distribution object's overhead would cost as much as a small network.
    ``log_softmax`` is one fused, numerically safe kernel (it subtracts the row maximum first).

    Args:
        logits: ``(batch, n_actions)`` float32 unnormalised scores.
        action: ``(batch,)`` int64 actions to score, or None to choose them (:func:`sample_action`).
        deterministic: when choosing, take the argmax instead of sampling.

    Returns:
        ``(batch,)`` int64 actions, float32 log-probabilities and float32 entropies (nats).
    """
    log_probs = F.log_softmax(logits, dim=-1)
    if action is None:
        action = sample_action(log_probs, deterministic)
    logprob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return action, logprob, entropy


class ActionAndValue(NamedTuple):
    """What ``get_action_and_value`` of the feed-forward agents returns; each tensor has shape ``(batch,)``,
    except a Gaussian agent's actions, ``(batch, act_dim)``."""

    action: torch.Tensor  #: int64 action index (``(batch, act_dim)`` float32 for a Gaussian policy)
    logprob: torch.Tensor  #: float32 log pi(action | obs)
    entropy: torch.Tensor  #: float32 entropy of pi(. | obs), in nats
    value: torch.Tensor  #: float32 V(obs)


class FlatActorCritic(nn.Module):
    """What the two agents for flat observation vectors share; subclasses say what the policy head means.

    Actor and critic MLP trunks (tanh, or one trunk shared by both heads), a linear policy head of
    ``head_size`` outputs with gain 0.01 (so the first policy is nearly uniform, or its mean nearly 0),
    a value head with gain 1, and the optional :class:`ObsNormalizer` that :meth:`act` applies to raw
    observations (see the module docstring).

    Args:
        obs_dim: length of the observation vector (LunarLander: 8).
        head_size: outputs of the policy head (logits, or the mean of each action dimension).
        hidden_size: width of each hidden layer.
        num_hidden_layers: hidden layers per trunk.
        shared_trunk: if True, actor and critic heads sit on one shared trunk (fewer
            parameters, but the value loss then shapes the policy's features too);
            if False (CleanRL's default), two separate MLPs.
        norm_obs: give the agent an :class:`ObsNormalizer` (``obs_normalizer``); None otherwise.
    """

    is_recurrent = False
    #: Rollouts only *sample* with this agent step by step (:meth:`sample`) and score the whole rollout
    #: afterwards, log pi(a|s) and V(s) for all T x N samples in one batched pass
    #: (:class:`ppo_course.rollout.RolloutCollector`). The weights do not change during a rollout, so
    #: the numbers are the same; but a rollout step of a small MLP costs PyTorch's per-call overhead
    #: rather than arithmetic, so one pass over the whole rollout is far cheaper than T small ones.
    score_after_rollout = True

    def __init__(self, obs_dim: int, head_size: int, hidden_size: int = 64, num_hidden_layers: int = 2,
                 shared_trunk: bool = False, norm_obs: bool = False):
        super().__init__()
        self.obs_dim, self.shared_trunk = obs_dim, shared_trunk
        self.obs_shape = (obs_dim,)
        self.actor_trunk = MLP(obs_dim, hidden_size, num_hidden_layers)
        self.critic_trunk = self.actor_trunk if shared_trunk else MLP(obs_dim, hidden_size, num_hidden_layers)
        self.actor_head = layer_init(nn.Linear(hidden_size, head_size), std=POLICY_GAIN)
        self.critic_head = layer_init(nn.Linear(hidden_size, 1), std=VALUE_GAIN)
        self.obs_normalizer = ObsNormalizer(obs_dim) if norm_obs else None

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        """V(x): ``(batch, obs_dim)`` -> ``(batch,)``."""
        return self.critic_head(self.critic_trunk(x)).squeeze(-1)

    def policy_head(self, x: torch.Tensor) -> torch.Tensor:
        """The policy head's output: ``(batch, obs_dim)`` -> ``(batch, head_size)``."""
        # F.linear on the head's parameters = self.actor_head(...) without the module-call overhead (see MLP)
        return F.linear(self.actor_trunk(x), self.actor_head.weight, self.actor_head.bias)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy head's output and V(x) in one pass (the shared trunk computed once)."""
        if self.shared_trunk:
            hidden = self.actor_trunk(x)
            return self.actor_head(hidden), self.critic_head(hidden).squeeze(-1)
        return self.policy_head(x), self.get_value(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw observations as the training env would have given them (unchanged without ``norm_obs``)."""
        return x if self.obs_normalizer is None else self.obs_normalizer(x)


class MLPActorCritic(FlatActorCritic):
    """Actor-critic for a flat observation vector and a discrete action space: a categorical policy.

    Args:
        obs_dim: length of the observation vector (LunarLander: 8).
        n_actions: number of discrete actions (LunarLander: 4).
        hidden_size, num_hidden_layers, shared_trunk, norm_obs: see :class:`FlatActorCritic`.

    Shapes: observations ``(batch, obs_dim)`` float32; logits ``(batch, n_actions)``;
    values ``(batch,)``.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden_size: int = 64,
                 num_hidden_layers: int = 2, shared_trunk: bool = False, norm_obs: bool = False):
        super().__init__(obs_dim, n_actions, hidden_size, num_hidden_layers, shared_trunk, norm_obs)
        self.n_actions = n_actions

    def get_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised action scores: ``(batch, obs_dim)`` -> ``(batch, n_actions)``."""
        return self.policy_head(x)

    def get_distribution(self, x: torch.Tensor) -> Categorical:
        """pi(. | x) as a ``Categorical`` built from logits (log-softmax inside, numerically safe)."""
        return Categorical(logits=self.get_logits(x), validate_args=False)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False) -> ActionAndValue:
        """Sample (or score) actions and evaluate the critic in one pass.

        The distribution's arithmetic is written out (:func:`sample_and_score`) because this runs
        once per rollout step; :meth:`get_distribution` gives the same numbers
        (``tests/test_networks.py`` checks it).

        Args:
            x: observations ``(batch, obs_dim)``, float32.
            action: if given, ``(batch,)`` int64 actions to score (the update phase);
                if None, actions are chosen (the rollout phase).
            deterministic: choose the argmax action instead of sampling.

        Returns:
            :class:`ActionAndValue` of ``(batch,)`` tensors.
        """
        logits, value = self.heads(x)
        return ActionAndValue(*sample_and_score(logits, action, deterministic), value)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """Sampled actions only, for a rollout that scores them afterwards: ``(batch, obs_dim)`` -> ``(batch,)`` int64.

        ``x`` is what the training env gives (normalised there when ``norm_obs``); :meth:`act` is the
        method for raw observations.
        """
        return sample_action(self.get_logits(x))

    @torch.no_grad()
    def act(self, x: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions only, without gradients, for raw observations: ``(batch, obs_dim)`` -> ``(batch,)`` int64.

        With an :class:`ObsNormalizer` the observations are normalised first, with its frozen statistics.
        """
        return sample_action(self.get_logits(self.normalize(x)), deterministic)


class GaussianActorCritic(FlatActorCritic):
    """Actor-critic for a flat observation vector and a continuous (``Box``) action space.

    The policy is a diagonal Gaussian, ``a ~ Normal(mean(x), exp(actor_logstd))`` independently in each
    action dimension (CleanRL's ``ppo_continuous_action.py``; Spinning Up's ``MLPGaussianActor``), so
    log pi(a | x) and the entropy are sums over the action dimensions. The mean is the policy head of
    :class:`FlatActorCritic` (gain 0.01: every initial mean is close to 0).

    Actions are not squashed or clipped here: a sample may fall outside the environment's bounds, and
    the environment clips what it receives (:func:`ppo_course.envs.lunar.make_vector_env`), while the
    rollout stores, and the update scores, the sample itself.

    Args:
        obs_dim: length of the observation vector (Pendulum: 3).
        act_dim: number of action dimensions (Pendulum: 1, BipedalWalker: 4).
        hidden_size, num_hidden_layers, shared_trunk, norm_obs: see :class:`FlatActorCritic`.

    Shapes: observations ``(batch, obs_dim)`` float32; actions and means ``(batch, act_dim)`` float32;
    log-probabilities, entropies and values ``(batch,)``.
    """

    #: No count of discrete actions (``act_dim`` counts the dimensions).
    n_actions = None

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int = 64, num_hidden_layers: int = 2,
                 shared_trunk: bool = False, norm_obs: bool = False):
        super().__init__(obs_dim, act_dim, hidden_size, num_hidden_layers, shared_trunk, norm_obs)
        self.act_dim = act_dim
        # One learned log-std per action dimension, the same in every state, starting at 0 (std 1), as in
        # CleanRL and Spinning Up. A std computed from the state can collapse or explode in states the
        # critic has barely seen, and for these tasks a single learned vector explores well enough.
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The policy's mean action: ``(batch, obs_dim)`` -> ``(batch, act_dim)``."""
        return self.policy_head(x)

    def _normal(self, mean: torch.Tensor) -> Normal:
        return Normal(mean, self.actor_logstd.exp().expand_as(mean), validate_args=False)

    def get_distribution(self, x: torch.Tensor) -> Normal:
        """pi(. | x) per action dimension: a ``Normal`` of batch shape ``(batch, act_dim)``.

        Sum its ``log_prob`` and ``entropy`` over the last dimension for the joint (diagonal) Gaussian.
        """
        return self._normal(self.get_mean(x))

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False) -> ActionAndValue:
        """Sample (or score) actions and evaluate the critic in one pass.

        Args:
            x: observations ``(batch, obs_dim)``, float32.
            action: if given, ``(batch, act_dim)`` float32 actions to score (the update phase);
                if None, actions are chosen (the rollout phase).
            deterministic: choose the mean instead of sampling.

        Returns:
            :class:`ActionAndValue`: action ``(batch, act_dim)``; log-probability, entropy (both summed
            over the action dimensions) and value ``(batch,)``.
        """
        mean, value = self.heads(x)
        dist = self._normal(mean)
        if action is None:
            action = mean if deterministic else dist.sample()
        return ActionAndValue(action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), value)

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """Sampled actions only, for a rollout that scores them afterwards: ``(batch, obs_dim)`` ->
        ``(batch, act_dim)`` float32.

        ``x`` is what the training env gives (normalised there when ``norm_obs``); :meth:`act` is the
        method for raw observations.
        """
        mean = self.get_mean(x)
        return torch.normal(mean, self.actor_logstd.exp().expand_as(mean))

    @torch.no_grad()
    def act(self, x: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions only, without gradients, for raw observations: ``(batch, obs_dim)`` -> ``(batch, act_dim)`` float32.

        Deterministic: the mean. With an :class:`ObsNormalizer` the observations are normalised first,
        with its frozen statistics.
        """
        x = self.normalize(x)
        return self.get_mean(x) if deterministic else self.sample(x)


def transposed(module: nn.Module, name: str) -> torch.Tensor:
    """``module.<name>.T`` as a contiguous ``(in, out)`` matrix, for ``torch.addmm(bias, x, W_T)`` = ``x @ W.T + bias``.

    The product is the one ``F.linear(x, W, bias)`` computes; with ``W.T`` laid out row by row, the
    CPU's matrix multiply reads it in order, which is faster for the small batches of a Doom rollout
    step (``benchmarks/RESULTS.md``). Inside :func:`weight_snapshot` (rollouts, evaluation: no
    autograd) the copy taken on entry is returned; everywhere else the copy is made from the current
    weight on every call, and with autograd on, gradients flow to ``W``.

    Returns:
        ``(in_features, out_features)`` float32, on ``W``'s device.
    """
    if not torch.is_grad_enabled():
        snapshot = module.__dict__.get("_weight_snapshot")
        if snapshot is not None:
            return snapshot[name]
    return getattr(module, name).t().contiguous()


@contextmanager
def weight_snapshot(agent: nn.Module):
    """Within the block, every :func:`transposed` weight of ``agent`` is one copy taken on entry.

    A rollout (:class:`~ppo_course.rollout.RolloutCollector`) and an evaluation run many forward
    passes with weights that do not change, so the transposed copies of the large matrices (NatureCNN's
    linear layer, the LSTM's gates; the modules listed in their ``_transposed_weights``) are made once
    per block instead of once per step. Weights changed between blocks (an optimiser step,
    ``load_state_dict``, an edit through ``.data``) are always seen by the next block; do not change
    them inside one. Blocks nest (the outer snapshot is kept).
    """
    taken = []
    with torch.inference_mode(False), torch.no_grad():  # normal tensors, usable outside inference mode too
        for module in agent.modules():
            names = getattr(module, "_transposed_weights", ())
            if names and "_weight_snapshot" not in module.__dict__:
                module.__dict__["_weight_snapshot"] = {n: getattr(module, n).detach().t().contiguous() for n in names}
                taken.append(module)
    try:
        yield agent
    finally:
        for module in taken:
            del module.__dict__["_weight_snapshot"]


def lstm_step(input_gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              w_hh_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of an LSTM layer, the equations of ``torch.nn.LSTM`` (Hochreiter and Schmidhuber, 1997)::

        i, f, g, o = split(x W_ih^T + b_ih + b_hh + h W_hh^T)      (PyTorch's gate order)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g);   h' = sigmoid(o) * tanh(c')

    The input's part of the gates comes in already computed (``input_gates``): it does not depend on
    the memory, so :func:`masked_lstm_unroll` computes it for every step at once.

    Args:
        input_gates: ``(N, 4 * hidden)`` = ``x W_ih^T + b_ih + b_hh`` for this step.
        h, c: ``(N, hidden)``, the state before this step.
        w_hh_t: ``(hidden, 4 * hidden)``, the transposed recurrent weight (:func:`transposed`).

    Returns:
        ``(h', c')``, each ``(N, hidden)``.
    """
    gates = torch.addmm(input_gates, h, w_hh_t)
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def masked_lstm_unroll(lstm: nn.LSTM, features: torch.Tensor, lstm_state: LSTMState,
                       starts: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
    """Unroll ``lstm`` over T steps of N environments, zeroing an environment's ``(h, c)`` before each
    step where its episode starts -- the done mask of CleanRL's ``ppo_atari_lstm.py``.

    One step at a time (the mask must act between steps), each computed by :func:`lstm_step` on the
    LSTM's own parameters: the equations of ``lstm(x, (h, c))`` (agreement is tested), faster than the
    sequence LSTM for one step of a small batch on the CPU. The rollout, the update and the exercise
    checks all come here, so they compute the same numbers.

    Only ``h W_hh^T`` needs the step before; the inputs' part of the gates, ``x_t W_ih^T + b``, is
    one matrix multiply over all T steps, done before the loop (cuDNN's LSTM does the same). In the
    update's backward pass that is one weight gradient for ``W_ih`` instead of T summed ones.
    A stacked LSTM is unrolled layer by layer: layer k's T outputs are layer k + 1's inputs.

    Args:
        lstm: a ``torch.nn.LSTM`` (any number of layers, ``batch_first=False``).
        features: ``(T, N, input_size)`` float32 inputs, time-major.
        lstm_state: ``(h, c)`` before the first step, each ``(num_layers, N, hidden)``.
        starts: ``(T, N)`` episode-start flags, 1.0 where step t's input is the first of an episode
            (the state is zeroed before that step), else 0.0.

    Returns:
        ``(outputs, (h, c))``: ``(T, N, hidden)`` top-layer outputs and the state after the last step
        (not masked for any later start).
    """
    T, N = features.shape[:2]
    keep = (1.0 - starts.float()).unsqueeze(-1).unbind(0)  # T tensors (N, 1): broadcast over (N, hidden)
    inputs, h_last, c_last = features, [], []
    for k in range(lstm.num_layers):
        bias = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")
        input_gates = torch.addmm(bias, inputs.reshape(T * N, -1), transposed(lstm, f"weight_ih_l{k}"))
        w_hh_t = transposed(lstm, f"weight_hh_l{k}")
        h, c = lstm_state[0][k], lstm_state[1][k]  # (N, hidden)
        outputs = []
        # unbind, not [t]: autograd then gathers the T steps' gradients into one tensor, once
        for step_gates, keep_t in zip(input_gates.reshape(T, N, -1).unbind(0), keep):
            h, c = lstm_step(step_gates, h * keep_t, c * keep_t, w_hh_t)
            outputs.append(h)
        inputs = torch.stack(outputs)  # (T, N, hidden): this layer's outputs, the next layer's inputs
        h_last.append(h)
        c_last.append(c)
    return inputs, (torch.stack(h_last), torch.stack(c_last))


class NatureCNN(nn.Module):
    """The DQN Nature paper's encoder (Mnih et al. 2015; CleanRL's ``ppo_atari.py``): stacked frames -> 512 features.

    ``Conv(32, 8x8, stride 4) -> ReLU -> Conv(64, 4x4, stride 2) -> ReLU -> Conv(64, 3x3, stride 1)
    -> ReLU -> flatten -> Linear(features_dim) -> ReLU``, every layer orthogonal with gain sqrt(2).
    On 84x84 frames the flattened size is 64 * 7 * 7 = 3136; other sizes (>= 36x36) work too,
    the flattened size is measured once at construction.

    Args:
        obs_shape: ``(channels, height, width)`` -- channels = frames in the stack (4 for Doom).
        features_dim: width of the output.

    Shapes: input ``(batch, C, H, W)`` uint8 pixels in [0, 255] (float32 in [0, 255] works too);
    they are divided by 255 here. Output ``(batch, features_dim)`` float32.
    """

    def __init__(self, obs_shape: tuple[int, int, int], features_dim: int = 512):
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"NatureCNN needs (channels, height, width) observations, got shape {tuple(obs_shape)}")
        channels = obs_shape[0]
        self.convs = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.linear = layer_init(nn.Linear(n_flat, features_dim))
        self.linear._transposed_weights = ("weight",)  # kept row-major within weight_snapshot (see transposed)
        self.features_dim = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.addmm(self.linear.bias, self.convs(x.float() / 255.0), transposed(self.linear, "weight")))


class CNNActorCritic(nn.Module):
    """:class:`NatureCNN` with an actor head (gain 0.01) and a critic head (gain 1.0) on its shared features.

    The agent sees only the current frame stack (4 frames = about half a second of Doom at frame
    skip 4): motion, but no memory. It is the control for :class:`RecurrentActorCritic`, with the
    same interface as :class:`MLPActorCritic` (``get_action_and_value(x, action, deterministic)``,
    ``get_value(x)``, ``act(x)``), so the feed-forward trainer path runs it unchanged.

    Args:
        obs_shape: ``(frame_stack, height, width)``, e.g. ``(4, 84, 84)``.
        n_actions: discrete actions (``doom:basic``: 3, ``doom:deadly_corridor``: 12).
        features_dim: NatureCNN output width.

    Shapes: observations ``(batch, C, H, W)`` uint8; logits ``(batch, n_actions)``; values ``(batch,)``.
    """

    is_recurrent = False

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, features_dim: int = 512):
        super().__init__()
        self.obs_shape, self.n_actions = tuple(obs_shape), n_actions
        self.features = NatureCNN(obs_shape, features_dim)
        self.actor_head = layer_init(nn.Linear(features_dim, n_actions), std=POLICY_GAIN)
        self.critic_head = layer_init(nn.Linear(features_dim, 1), std=VALUE_GAIN)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        """V(x): ``(batch, C, H, W)`` -> ``(batch,)``."""
        return self.critic_head(self.features(x)).squeeze(-1)

    def get_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` -> ``(batch, n_actions)``."""
        return self.actor_head(self.features(x))

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False) -> ActionAndValue:
        """As :meth:`MLPActorCritic.get_action_and_value`, with one CNN pass shared by both heads."""
        hidden = self.features(x)
        value = self.critic_head(hidden).squeeze(-1)
        return ActionAndValue(*sample_and_score(self.actor_head(hidden), action, deterministic), value)

    @torch.no_grad()
    def act(self, x: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions only: ``(batch, C, H, W)`` -> ``(batch,)`` int64."""
        return sample_and_score(self.get_logits(x), None, deterministic)[0]


#: An LSTM state ``(h, c)``, each ``(num_layers=1, batch, hidden)`` float32 -- PyTorch's layout.
LSTMState = tuple[torch.Tensor, torch.Tensor]


class RecurrentActionAndValue(NamedTuple):
    """What :meth:`RecurrentActorCritic.get_action_and_value` returns."""

    action: torch.Tensor  #: ``(T*N,)`` int64
    logprob: torch.Tensor  #: ``(T*N,)`` float32 log pi(action | history)
    entropy: torch.Tensor  #: ``(T*N,)`` float32, nats
    value: torch.Tensor  #: ``(T*N,)`` float32 V(history)
    lstm_state: LSTMState  #: ``(h, c)`` after the last step, each ``(1, N, hidden)``


class RecurrentActorCritic(nn.Module):
    """:class:`NatureCNN` -> LSTM -> actor head (gain 0.01) and critic head (gain 1.0), as in CleanRL's ``ppo_atari_lstm.py``.

    The LSTM carries ``(h, c)`` from step to step, so the policy can act on what it saw
    earlier in the episode (an enemy that left the screen, a cue shown once). Where an episode
    has just begun, the state is zeroed before the step (CleanRL's ``ppo_atari_lstm.py``)::

        h <- h * (1 - start);  c <- c * (1 - start)

    applied per time step while unrolling, so a sequence that crosses an episode boundary
    restarts from a blank memory exactly where the new episode starts.

    **The two layouts.** PyTorch's LSTM keeps its state as ``(num_layers, batch, hidden)`` =
    ``(1, N, hidden)`` here; rollout storage is time-major ``(T, N, ...)`` (CleanRL). A per-step
    design would store a snapshot of the state at *every* step, permuted to ``(N, 1, hidden)``;
    this package stores only the state at the *start* of a rollout, in PyTorch's own layout
    ``(1, N, hidden)`` -- the update re-unrolls whole sequences from it (see
    :func:`ppo_course.trainer.ppo_update`), so no per-step snapshots and no permute are needed.
    Selecting environments from a stored state is ``h[:, env_indices]`` (dimension 1 is the batch).

    **The inputs.** ``x`` is ``(T * N, C, H, W)``: T time steps of N environments, flattened
    time-major (row ``t * N + n`` is env n at step t), as ``RolloutBuffer`` stores it. ``starts`` is
    ``(T * N,)`` float32, 1.0 where ``x`` is the *first* observation of a new episode (the
    previous step ended one) -- the buffer's ``starts``, CleanRL's ``next_done``. During a rollout T = 1.

    Args:
        obs_shape: ``(frame_stack, height, width)``.
        n_actions: discrete actions.
        lstm_hidden_size: LSTM width (CleanRL: 128; ``doom:basic``'s preset 128, ``doom:deadly_corridor``'s 512).
        features_dim: NatureCNN output width (the LSTM's input size).
    """

    is_recurrent = True

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, lstm_hidden_size: int = 256,
                 features_dim: int = 512):
        super().__init__()
        self.obs_shape, self.n_actions, self.lstm_hidden_size = tuple(obs_shape), n_actions, lstm_hidden_size
        self.features = NatureCNN(obs_shape, features_dim)
        self.lstm = nn.LSTM(features_dim, lstm_hidden_size)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.lstm._transposed_weights = ("weight_ih_l0", "weight_hh_l0")  # see weight_snapshot
        self.actor_head = layer_init(nn.Linear(lstm_hidden_size, n_actions), std=POLICY_GAIN)
        self.critic_head = layer_init(nn.Linear(lstm_hidden_size, 1), std=VALUE_GAIN)

    def initial_state(self, num_envs: int, device: torch.device | str | None = None) -> LSTMState:
        """A blank memory: ``(h, c)``, each zeros of shape ``(1, num_envs, lstm_hidden_size)``."""
        device = device if device is not None else self.actor_head.weight.device
        shape = (self.lstm.num_layers, num_envs, self.lstm_hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def get_states(self, x: torch.Tensor, lstm_state: LSTMState,
                   starts: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
        """Encode T steps of observations and unroll the LSTM over them (:func:`masked_lstm_unroll`).

        Args:
            x: ``(T * N, C, H, W)`` observations, time-major.
            lstm_state: ``(h, c)`` before the first step, each ``(num_layers, N, hidden)`` (1 layer here).
            starts: ``(T * N,)`` episode-start flags (1.0 = reset the memory before this step).

        Returns:
            ``(hidden, lstm_state)``: ``(T * N, hidden)`` LSTM outputs (time-major) and the state
            after the last step.

        Raises:
            ValueError: ``x`` does not hold a whole number of steps of N environments.
        """
        n = lstm_state[0].shape[1]
        features = self.features(x)
        if features.shape[0] % n:
            raise ValueError(f"{features.shape[0]} observations are not T steps of {n} environments")
        features = features.reshape(-1, n, features.shape[-1])  # (T, N, features)
        hidden, lstm_state = masked_lstm_unroll(self.lstm, features, lstm_state, starts.reshape(-1, n))
        return hidden.reshape(-1, self.lstm_hidden_size), lstm_state

    def get_action_and_value(self, x: torch.Tensor, lstm_state: LSTMState, starts: torch.Tensor,
                             action: torch.Tensor | None = None,
                             deterministic: bool = False) -> RecurrentActionAndValue:
        """Sample (or score) actions, evaluate the critic, and advance the memory.

        Args:
            x, lstm_state, starts: as :meth:`get_states` (rollout: T = 1; update: T = num_steps).
            action: ``(T * N,)`` int64 actions to score (update), or None to choose them (rollout).
            deterministic: choose the argmax instead of sampling.

        Returns:
            :class:`RecurrentActionAndValue`; its ``lstm_state`` is the state after the last step,
            *before* any masking for the next step (the next call masks it with its own ``starts``).
        """
        hidden, lstm_state = self.get_states(x, lstm_state, starts)
        value = self.critic_head(hidden).squeeze(-1)
        action, logprob, entropy = sample_and_score(self.actor_head(hidden), action, deterministic)
        return RecurrentActionAndValue(action, logprob, entropy, value, lstm_state)

    def get_value(self, x: torch.Tensor, lstm_state: LSTMState, starts: torch.Tensor) -> torch.Tensor:
        """V of each step, ``(T * N,)``; the advanced state is discarded (used for bootstrapping)."""
        return self.critic_head(self.get_states(x, lstm_state, starts)[0]).squeeze(-1)

    @torch.no_grad()
    def act(self, x: torch.Tensor, lstm_state: LSTMState, starts: torch.Tensor,
            deterministic: bool = True) -> tuple[torch.Tensor, LSTMState]:
        """``(actions (N,) int64, new lstm_state)`` for one step of N environments."""
        hidden, lstm_state = self.get_states(x, lstm_state, starts)
        return sample_and_score(self.actor_head(hidden), None, deterministic)[0], lstm_state


def build_agent(config, obs_shape: tuple[int, ...], action_space) -> nn.Module:
    """The network a config asks for, for an observation shape and a Gymnasium action space.

    * ``Discrete`` actions: flat ``(obs_dim,)`` observations -> :class:`MLPActorCritic`; ``(C, H, W)``
      pixels -> :class:`RecurrentActorCritic` if ``config.use_lstm``, else :class:`CNNActorCritic`.
    * ``Box`` actions (flat, ``(act_dim,)``), flat observations -> :class:`GaussianActorCritic`.

    ``config.norm_obs`` gives the flat agents an :class:`ObsNormalizer`.

    Raises:
        ValueError: any other action space (``MultiDiscrete``, ``Dict``, ...), pixels with ``Box``
            actions or with ``norm_obs``, another observation shape, or ``use_lstm`` with flat observations.
    """
    from gymnasium import spaces

    use_lstm, norm_obs = getattr(config, "use_lstm", False), getattr(config, "norm_obs", False)
    box = isinstance(action_space, spaces.Box)
    if not (isinstance(action_space, spaces.Discrete) or (box and len(action_space.shape) == 1)):
        shape = getattr(action_space, "shape", None)
        what = type(action_space).__name__ + (f" of shape {tuple(shape)}" if shape else "")
        raise ValueError(f"no agent for a {what} action space: ppo-course supports Discrete actions and "
                         "Box actions of shape (act_dim,)")
    if len(obs_shape) == 3:
        if box:
            raise ValueError(f"Box action spaces need flat (obs_dim,) observations, got shape {tuple(obs_shape)}: "
                             "the Gaussian agent is an MLP")
        if norm_obs:
            raise ValueError(f"norm_obs normalises flat (obs_dim,) observations, got pixels {tuple(obs_shape)}")
        n_actions = int(action_space.n)
        if use_lstm:
            return RecurrentActorCritic(obs_shape, n_actions, lstm_hidden_size=getattr(config, "lstm_hidden_size", 256))
        return CNNActorCritic(obs_shape, n_actions)
    if len(obs_shape) != 1:
        raise ValueError(f"no agent for observations of shape {tuple(obs_shape)}: need (obs_dim,) or (C, H, W)")
    if use_lstm:
        raise ValueError("use_lstm needs pixel observations (C, H, W); this package's MLP agent has no LSTM")
    mlp = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
               shared_trunk=config.shared_trunk, norm_obs=norm_obs)
    if box:
        return GaussianActorCritic(obs_shape[0], action_space.shape[0], **mlp)
    return MLPActorCritic(obs_shape[0], int(action_space.n), **mlp)
