"""Correct but unusual implementations of every exercise task: each must pass its check.

The bug catalogues show that the checks catch broken code; these show the other side, that they do not
reject code that is right but written differently from the reference: float64 or NumPy inside,
``torch.where`` instead of ``min``, ``expm1``, a vectorised GAE, hand-written samplers drawing other
random numbers where the contract allows it, ``torch.distributions`` instead of formulas, ...

A variant that a check wrongly rejects and whose check this suite may not change is marked
``xfail(strict=True)`` with the reason, so that fixing the check turns it into a failure to remove.
"""

import math
import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Independent, MultivariateNormal, Normal

from ppo_course.checks import (check_actor_critic, check_approx_kl, check_clip_and_score, check_clipped_surrogate,
                               check_frame_stacker, check_gae, check_gae_with_truncation,
                               check_gaussian_sample_and_score, check_layer_init, check_masked_lstm_unroll,
                               check_policy_network, check_ppo_loss, check_ppo_update, check_preprocess_frame,
                               check_reunroll_logprobs, check_running_obs_normalizer, check_sampling,
                               check_sequence_minibatches, check_shaping_reward, check_value_loss)
from ppo_course.envs.doom import AMMO_POOLS
from ppo_course.networks import OBS_CLIP, OBS_EPSILON, ActionAndValue, layer_init

from conftest import ppo_loss  # noqa: F401  (the global loss the ex05 update loops call, as in the notebook)


def assert_passes(result):
    assert result.status == "pass", str(result)


# ============================================================================================
# ex01: PolicyNetwork, sample_and_score
# ============================================================================================
class PolicyNetworkModuleList(nn.Module):
    """Hidden layers in an nn.ModuleList walked by a loop, the activation as torch.tanh, the head separate."""

    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.hidden = nn.ModuleList([layer_init(nn.Linear(obs_dim, hidden_size)),
                                     layer_init(nn.Linear(hidden_size, hidden_size))])
        self.head = layer_init(nn.Linear(hidden_size, n_actions), std=0.01)

    def forward(self, obs):
        x = obs
        for layer in self.hidden:
            x = torch.tanh(layer(x))
        return self.head(x)


class PolicyNetworkFloat64(nn.Module):
    """float64 parameters and arithmetic inside, float32 logits out."""

    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size),
                                 nn.Tanh(), nn.Linear(hidden_size, n_actions)).double()

    def forward(self, obs):
        return self.net(obs.double()).float()


class PolicyNetworkZeroHead(nn.Module):
    """The policy head initialised to exactly zero: a perfectly uniform initial policy. Until its first update every
    observation gets the same logits and the hidden layers get no gradient; the check must judge the architecture,
    not those initial values (it needed a fix: it used to report "forward ignores its input")."""

    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.net = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden_size, n_actions), std=0.0))

    def forward(self, obs):
        return self.net(obs)


@pytest.mark.parametrize("cls", [PolicyNetworkModuleList, PolicyNetworkFloat64, PolicyNetworkZeroHead])
def test_policy_network_variants(cls):
    assert_passes(check_policy_network(cls, quiet=True))


def sample_and_score_gumbel(logits, action=None, deterministic=False):
    """A hand-written Gumbel-max sampler (other random numbers than Categorical's), log_softmax by hand."""
    logp = torch.log_softmax(logits, dim=-1)
    if action is None:
        if deterministic:
            action = logits.argmax(-1)
        else:
            u = torch.rand_like(logits).clamp_(1e-20, 1.0)
            action = (logits - torch.log(-torch.log(u))).argmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1), entropy


def sample_and_score_multinomial_float64(logits, action=None, deterministic=False):
    """torch.multinomial on the probabilities, everything computed in float64 with logsumexp, float32 out."""
    x = logits.double()
    logp = x - torch.logsumexp(x, dim=-1, keepdim=True)
    if action is None:
        action = x.argmax(-1) if deterministic else torch.multinomial(logp.exp(), 1).squeeze(-1)
    logprob = logp[torch.arange(len(x)), action]
    entropy = -(torch.softmax(x, -1) * logp).sum(-1)
    return action, logprob.float(), entropy.float()


def sample_and_score_distribution_probs(logits, action=None, deterministic=False):
    """Categorical built from probabilities rather than logits; the argmax taken on the probabilities."""
    dist = Categorical(probs=torch.softmax(logits, dim=-1))
    if action is None:
        action = dist.probs.argmax(-1) if deterministic else dist.sample()
    return action, dist.log_prob(action), dist.entropy()


def sample_and_score_numpy_rng(logits, action=None, deterministic=False):
    """Inverse-CDF sampling with a NumPy generator seeded from PyTorch's (reproducible under torch.manual_seed)."""
    logp = torch.log_softmax(logits, -1)
    if action is None:
        if deterministic:
            action = logits.argmax(-1)
        else:
            rng = np.random.default_rng(int(torch.randint(2 ** 31 - 1, ())))
            cdf = logp.detach().double().exp().cumsum(-1).numpy()
            u = rng.random((len(cdf), 1))
            action = torch.as_tensor((cdf < u).sum(-1).clip(0, cdf.shape[1] - 1), dtype=torch.int64)
    return action, logp.gather(-1, action[:, None])[:, 0], -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("fn", [sample_and_score_gumbel, sample_and_score_multinomial_float64,
                                sample_and_score_distribution_probs, sample_and_score_numpy_rng])
def test_sampling_variants(fn):
    assert_passes(check_sampling(fn, quiet=True))


# ============================================================================================
# ex02: layer_init, ActorCritic
# ============================================================================================
def layer_init_scale_after(layer, std=math.sqrt(2), bias_const=0.0):
    """Orthogonal with gain 1, then scaled in place; the bias filled through .data."""
    nn.init.orthogonal_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(std)
    if getattr(layer, "bias", None) is not None:
        layer.bias.data.fill_(bias_const)
    return layer


def layer_init_qr(layer, std=math.sqrt(2), bias_const=0.0):
    """An orthogonal matrix from a QR decomposition by hand, in float64 (other random numbers than PyTorch's)."""
    rows = layer.weight.shape[0]
    cols = layer.weight[0].numel()
    gaussian = torch.randn(max(rows, cols), min(rows, cols), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))
    w = q if rows >= cols else q.T
    with torch.no_grad():
        layer.weight.copy_((std * w).reshape(layer.weight.shape).float())
        if layer.bias is not None:
            layer.bias.copy_(torch.full_like(layer.bias, bias_const))
    return layer


@pytest.mark.parametrize("fn", [layer_init_scale_after, layer_init_qr])
def test_layer_init_variants(fn):
    assert_passes(check_layer_init(fn, quiet=True))


class ActorCriticBodiesAndHeads(nn.Module):
    """Trunks and heads as separate attributes, the value as [:, 0], Categorical from logits."""

    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.actor_body = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                        layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh())
        self.actor_head = layer_init(nn.Linear(hidden_size, n_actions), std=0.01)
        self.critic_body = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                         layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh())
        self.critic_head = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def get_value(self, x):
        return self.critic_head(self.critic_body(x))[:, 0]

    def get_action_and_value(self, x, action=None):
        dist = Categorical(logits=self.actor_head(self.actor_body(x)))
        action = dist.sample() if action is None else action
        return action, dist.log_prob(action), dist.entropy(), self.get_value(x)


class ActorCriticHandWritten(nn.Module):
    """No torch.distributions: multinomial sampling, log_softmax and the entropy by hand, value .flatten()ed."""

    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden_size, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden_size, n_actions), std=0.01))

    def get_value(self, x):
        return self.critic(x).flatten()

    def get_action_and_value(self, x, action=None):
        logp = torch.log_softmax(self.actor(x), dim=-1)
        if action is None:
            action = torch.multinomial(logp.exp(), 1).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return action, logp.gather(1, action[:, None]).squeeze(1), entropy, self.get_value(x)


class ActorCriticFloat64(nn.Module):
    """float64 networks inside, float32 out, the package's ActionAndValue named tuple returned."""

    def __init__(self, obs_dim, n_actions, hidden_size=64):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden_size, 1), std=1.0)).double()
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_size)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden_size, hidden_size)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden_size, n_actions), std=0.01)).double()

    def get_value(self, x):
        return self.critic(x.double()).squeeze(-1).float()

    def get_action_and_value(self, x, action=None):
        dist = Categorical(logits=self.actor(x.double()))
        if action is None:
            action = dist.sample()
        return ActionAndValue(action, dist.log_prob(action).float(), dist.entropy().float(), self.get_value(x))


@pytest.mark.parametrize("cls", [ActorCriticBodiesAndHeads, ActorCriticHandWritten, ActorCriticFloat64])
def test_actor_critic_variants(cls):
    assert_passes(check_actor_critic(cls, quiet=True))


# ============================================================================================
# ex03: compute_gae
# ============================================================================================
def compute_gae_vectorised(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                           gae_lambda=0.95):
    """No loop over time: A_t = sum_k (prod_{t <= j < k} gamma lambda (1 - done_j)) delta_k as one einsum."""
    if final_values is None:
        final_values = torch.zeros_like(values)
    T = values.shape[0]
    following = torch.cat([values[1:], next_value[None]], dim=0)
    next_values = torch.where(truncations.bool(), final_values, following)
    delta = rewards + gamma * next_values * (1.0 - terminations) - values
    carry = gamma * gae_lambda * (1.0 - torch.clamp(terminations + truncations, max=1.0))  # c_j, (T, N)
    upper = torch.ones(T, T, dtype=torch.bool).triu()  # j >= t
    factors = torch.where(upper[:, :, None], carry[None, :, :], torch.ones(()))  # [t, j] = c_j for j >= t
    products = torch.cumprod(factors, dim=1)  # [t, k] = prod_{t <= j <= k} c_j
    weights = torch.cat([torch.ones(T, 1, values.shape[1]), products[:, :-1]], dim=1)  # prod_{t <= j < k}
    weights = weights * upper[:, :, None]
    advantages = torch.einsum("tkn,kn->tn", weights, delta)
    return advantages, advantages + values


def compute_gae_numpy(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                      gae_lambda=0.95):
    """NumPy float64 inside, a float32 tensor out."""
    r, v, term, trunc, nv = (np.asarray(t, dtype=np.float64) for t in (rewards, values, terminations, truncations,
                                                                       next_value))
    fv = np.zeros_like(v) if final_values is None else np.asarray(final_values, dtype=np.float64)
    adv = np.zeros_like(v)
    last = np.zeros_like(nv)
    for t in range(len(r) - 1, -1, -1):
        following = nv if t == len(r) - 1 else v[t + 1]
        bootstrap = np.where(trunc[t] > 0, fv[t], following) * (1.0 - term[t])
        last = r[t] + gamma * bootstrap - v[t] + gamma * gae_lambda * (1.0 - np.maximum(term[t], trunc[t])) * last
        adv[t] = last
    advantages = torch.from_numpy(adv).float()
    return advantages, torch.from_numpy(adv + v).float()


def compute_gae_float64_where(rewards, values, terminations, truncations, next_value, final_values=None,
                              gamma=0.99, gae_lambda=0.95):
    """float64 inside, torch.where for every choice, the advantages gathered in a list and stacked."""
    dt = torch.float64
    if final_values is None:
        final_values = torch.zeros_like(values)
    rows, last = [], torch.zeros_like(next_value, dtype=dt)
    for t in reversed(range(rewards.shape[0])):
        following = (next_value if t == rewards.shape[0] - 1 else values[t + 1]).to(dt)
        ended = (terminations[t] > 0) | (truncations[t] > 0)
        bootstrap = torch.where(terminations[t] > 0, torch.zeros((), dtype=dt),
                                torch.where(truncations[t] > 0, final_values[t].to(dt), following))
        delta = rewards[t].to(dt) + gamma * bootstrap - values[t].to(dt)
        last = delta + torch.where(ended, torch.zeros((), dtype=dt), gamma * gae_lambda * last)
        rows.append(last)
    advantages = torch.stack(rows[::-1]).float()
    return advantages, advantages + values


@pytest.mark.parametrize("fn", [compute_gae_vectorised, compute_gae_numpy, compute_gae_float64_where])
@pytest.mark.parametrize("check", [check_gae, check_gae_with_truncation])
def test_gae_variants(fn, check):
    assert_passes(check(fn, quiet=True))


# ============================================================================================
# ex04: clipped_surrogate, value_loss, ppo_loss, approx_kl
# ============================================================================================
def clipped_surrogate_where_expm1(new_logprobs, old_logprobs, advantages, clip_coef):
    """The ratio as expm1 + 1, torch.where instead of torch.min."""
    ratio = torch.expm1(new_logprobs - old_logprobs) + 1.0
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.where(unclipped < clipped, unclipped, clipped).mean()


def clipped_surrogate_by_sign(new_logprobs, old_logprobs, advantages, clip_coef):
    """The pessimistic bound written per advantage sign: cap the ratio above for A >= 0, below for A < 0."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    capped = torch.where(advantages >= 0, torch.clamp(ratio, max=1 + clip_coef), torch.clamp(ratio, min=1 - clip_coef))
    return -(capped * advantages).sum() / advantages.numel()


@pytest.mark.parametrize("fn", [clipped_surrogate_where_expm1, clipped_surrogate_by_sign])
def test_clipped_surrogate_variants(fn):
    assert_passes(check_clipped_surrogate(fn, quiet=True))


def value_loss_float64(new_values, old_values, returns, clip_coef=None):
    """float64 inside, torch.maximum, F.mse_loss for the unclipped case."""
    if clip_coef is None:
        return 0.5 * nn.functional.mse_loss(new_values.double(), returns.double()).float()
    new, old, ret = new_values.double(), old_values.double(), returns.double()
    v_clipped = torch.clamp(new, old - clip_coef, old + clip_coef)
    return (0.5 * torch.maximum((new - ret) ** 2, (v_clipped - ret) ** 2).mean()).float()


def value_loss_detached_targets(new_values, old_values, returns, clip_coef=None):
    """Detaches its constant inputs (old values, returns), squares with .pow(2)."""
    returns = returns.detach()
    if clip_coef is None:
        return 0.5 * (new_values - returns).pow(2).mean()
    old = old_values.detach()
    v_clipped = old + (new_values - old).clamp(-clip_coef, clip_coef)
    return 0.5 * torch.max((new_values - returns).pow(2), (v_clipped - returns).pow(2)).mean()


@pytest.mark.parametrize("fn", [value_loss_float64, value_loss_detached_targets])
def test_value_loss_variants(fn):
    assert_passes(check_value_loss(fn, quiet=True))


def _surrogate(new, old, adv, clip):
    ratio = torch.exp(new - old)
    return -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv).mean()


def _value(new, old, ret, clip):
    v_clipped = old + torch.clamp(new - old, -clip, clip)
    return 0.5 * torch.max((new - ret) ** 2, (v_clipped - ret) ** 2).mean()


def ppo_loss_float64(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                     clip_coef, vf_coef, ent_coef):
    """The whole loss in float64, torch.std_mean for the normalisation, float32 out."""
    d = [t.double() for t in (new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy)]
    new, old, adv, new_v, old_v, ret, ent = d
    if adv.numel() > 1:
        std, mean = torch.std_mean(adv)
        adv = (adv - mean) / (std + 1e-8)
    else:
        adv = adv - adv.mean()
    loss = _surrogate(new, old, adv, clip_coef) - ent_coef * ent.mean() + vf_coef * _value(new_v, old_v, ret, clip_coef)
    return loss.float()


def ppo_loss_detached_constants(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                                clip_coef, vf_coef, ent_coef):
    """Detaches what is constant data from the rollout: old log-probs, advantages, old values, returns."""
    old_logprobs, advantages = old_logprobs.detach(), advantages.detach()
    old_values, returns = old_values.detach(), returns.detach()
    if advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    else:
        advantages = advantages - advantages.mean()
    return (_surrogate(new_logprobs, old_logprobs, advantages, clip_coef) - ent_coef * entropy.mean()
            + vf_coef * _value(new_values, old_values, returns, clip_coef))


def ppo_loss_item_statistics(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                             clip_coef, vf_coef, ent_coef):
    """Advantage normalisation with Python-number statistics (.item()): the advantages are constants anyway."""
    mean = advantages.mean().item()
    std = advantages.std().item() if advantages.numel() > 1 else math.inf
    advantages = (advantages - mean) / (std + 1e-8)
    return (_surrogate(new_logprobs, old_logprobs, advantages, clip_coef) - ent_coef * entropy.mean()
            + vf_coef * _value(new_values, old_values, returns, clip_coef))


@pytest.mark.parametrize("fn", [ppo_loss_float64, ppo_loss_detached_constants, ppo_loss_item_statistics])
def test_ppo_loss_variants(fn):
    assert_passes(check_ppo_loss(fn, quiet=True))


def approx_kl_expm1(new_logprobs, old_logprobs):
    """expm1 for r - 1: exact for tiny log-ratios."""
    logratio = new_logprobs - old_logprobs
    return (torch.expm1(logratio) - logratio).mean()


def approx_kl_numpy(new_logprobs, old_logprobs):
    """NumPy float64 inside; a 0-d float64 tensor out."""
    logratio = new_logprobs.detach().double().numpy() - old_logprobs.detach().double().numpy()
    return torch.as_tensor(np.mean(np.expm1(logratio) - logratio))


@pytest.mark.parametrize("fn", [approx_kl_expm1, approx_kl_numpy])
def test_approx_kl_variants(fn):
    assert_passes(check_approx_kl(fn, quiet=True))


# ============================================================================================
# ex05: ppo_update
# ============================================================================================
def ppo_update_split_and_floats(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
    """np.split of the permutation, torch index tensors, approx_kl as Python floats, np.mean for the early stop,
    the actions passed by keyword, zero_grad before the forward pass."""
    b = buf.flatten(advantages=advantages, returns=returns)
    kls = []
    for _ in range(config.update_epochs):
        kls = []
        for chunk in np.split(rng.permutation(config.batch_size), config.num_minibatches):
            idx = torch.as_tensor(chunk)
            optimizer.zero_grad()
            out = agent.get_action_and_value(b["obs"][idx], action=b["actions"][idx])
            loss = ppo_loss(out.logprob, b["logprobs"][idx], b["advantages"][idx], out.value, b["values"][idx],
                            b["returns"][idx], out.entropy, config.clip_coef, config.vf_coef, ent_coef)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(agent.parameters()), max_norm=config.max_grad_norm)
            optimizer.step()
            logratio = (out.logprob - b["logprobs"][idx]).detach().double()
            kls.append(float((torch.expm1(logratio) - logratio).mean()))
        if config.target_kl is not None and np.mean(kls) > config.target_kl:
            break
    return float(np.mean(kls))


def ppo_update_manual_flatten(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
    """No buf.flatten: each (T, N, ...) tensor reshaped by hand; minibatches taken with a while loop; the approx_kl
    computed in one tensor per epoch."""
    def flat(t):
        return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])

    obs, actions, old_logprobs, old_values = flat(buf.obs), flat(buf.actions), flat(buf.logprobs), flat(buf.values)
    adv, ret = flat(advantages), flat(returns)
    epoch_kls = None
    for _ in range(config.update_epochs):
        order, start, epoch_kls = rng.permutation(config.batch_size), 0, []
        while start < config.batch_size:
            idx = order[start:start + config.minibatch_size]
            start += config.minibatch_size
            _, logprob, entropy, value = agent.get_action_and_value(obs[idx], actions[idx])
            loss = ppo_loss(logprob, old_logprobs[idx], adv[idx], value, old_values[idx], ret[idx], entropy,
                            config.clip_coef, config.vf_coef, ent_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                ratio = (logprob - old_logprobs[idx]).exp()
                epoch_kls.append(((ratio - 1) - ratio.log()).mean())
        epoch_kl = torch.stack(epoch_kls).mean()
        if config.target_kl is not None and epoch_kl.item() > config.target_kl:
            break
    return torch.stack(epoch_kls).mean().item()


def ppo_update_kl_from_a_second_forward(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
    """The approx_kl from a separate no-grad forward pass before the step (two network calls per minibatch); list
    indices; ppo_loss called with keyword coefficients; the value from get_value."""
    b = buf.flatten(advantages=advantages, returns=returns)
    kls = []
    for _ in range(config.update_epochs):
        order, kls = rng.permutation(config.batch_size), []
        for start in range(0, config.batch_size, config.minibatch_size):
            idx = order[start:start + config.minibatch_size].tolist()
            with torch.no_grad():
                logratio = agent.get_action_and_value(b["obs"][idx], b["actions"][idx])[1] - b["logprobs"][idx]
                kls.append(((logratio.exp() - 1) - logratio).mean().item())
            out = agent.get_action_and_value(b["obs"][idx], b["actions"][idx])
            loss = ppo_loss(out.logprob, b["logprobs"][idx], b["advantages"][idx], agent.get_value(b["obs"][idx]),
                            b["values"][idx], b["returns"][idx], out.entropy, clip_coef=config.clip_coef,
                            vf_coef=config.vf_coef, ent_coef=ent_coef)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
        if config.target_kl is not None and sum(kls) / len(kls) > config.target_kl:
            break
    return sum(kls) / len(kls)


@pytest.mark.parametrize("fn", [ppo_update_split_and_floats, ppo_update_manual_flatten,
                                ppo_update_kl_from_a_second_forward])
def test_ppo_update_variants(fn):
    assert_passes(check_ppo_update(fn, quiet=True))


# ============================================================================================
# ex06: preprocess_frame, FrameStacker, shaping_reward
# ============================================================================================
def preprocess_frame_numpy_weights(frame, size=(84, 84)):
    """The luminance weights by hand in float32, cv2's INTER_AREA on the float image, rounded back to uint8."""
    gray = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    small = cv2.resize(gray, dsize=(size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def preprocess_frame_skip_noop_resize(frame, size=(84, 84)):
    """cv2 with keyword arguments; no resize when the frame already has the size."""
    gray = cv2.cvtColor(np.ascontiguousarray(frame), code=cv2.COLOR_RGB2GRAY)
    if gray.shape == tuple(size):
        return gray
    return cv2.resize(gray, dsize=(size[1], size[0]), interpolation=cv2.INTER_AREA)


def preprocess_frame_resize_first(frame, size=(84, 84)):
    """Resize the colour screen first, then convert: both steps are linear, so the order only changes rounding."""
    small = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("fn", [preprocess_frame_numpy_weights, preprocess_frame_skip_noop_resize,
                                preprocess_frame_resize_first])
def test_preprocess_frame_variants(fn):
    assert_passes(check_preprocess_frame(fn, quiet=True))


class FrameStackerRoll:
    """A preallocated (num_frames, H, W) array shifted with np.roll; copies returned."""

    def __init__(self, num_frames=4):
        self.num_frames = num_frames
        self.stack = None

    def reset(self, frame):
        self.stack = np.repeat(frame[None], self.num_frames, axis=0)
        return self.stack.copy()

    def step(self, frame):
        self.stack = np.roll(self.stack, -1, axis=0)
        self.stack[-1] = frame
        return self.stack.copy()


class FrameStackerList:
    """A plain list sliced on each step, np.array of it returned."""

    def __init__(self, num_frames=4):
        self.num_frames = num_frames
        self.frames = []

    def reset(self, frame):
        self.frames = [frame] * self.num_frames  # the same array n times: never written to, so harmless
        return np.array(self.frames)

    def step(self, frame):
        self.frames = self.frames[1:] + [frame.copy()]
        return np.array(self.frames, dtype=np.uint8)


@pytest.mark.parametrize("cls", [FrameStackerRoll, FrameStackerList])
def test_frame_stacker_variants(cls):
    assert_passes(check_frame_stacker(cls, quiet=True))


def shaping_reward_index_lookup(names, prev_values, values, max_x, config):
    """Variables found with names.index, NumPy maximum/clip, NumPy floats in the result."""
    def get(arr, name):
        return arr[list(names).index(name)]

    pools = [list(names).index(k) for k in AMMO_POOLS]
    ammo = np.sum(values[pools]) - np.sum(prev_values[pools])
    health = np.clip(get(values, "HEALTH"), 0, None) - np.clip(get(prev_values, "HEALTH"), 0, None)
    x = get(values, "POSITION_X")
    terms = {
        "kill": config.kill_reward * np.maximum(get(values, "KILLCOUNT") - get(prev_values, "KILLCOUNT"), 0.0),
        "ammo": config.ammo_reward * np.maximum(ammo, 0.0) - config.ammo_penalty * np.maximum(-ammo, 0.0),
        "health": np.where(health > 0, config.health_gain_scale * health, config.health_penalty * health),
        "progress": config.progress_scale * np.maximum(x - max_x, 0.0),
    }
    return terms, np.maximum(max_x, x)


def shaping_reward_only_active_terms(names, prev_values, values, max_x, config):
    """Computes only the terms whose coefficients are not 0 (as the package does), 0.0 for the others."""
    prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
    terms = dict.fromkeys(("kill", "ammo", "health", "progress"), 0.0)
    if config.kill_reward:
        terms["kill"] = config.kill_reward * max(0.0, now["KILLCOUNT"] - prev["KILLCOUNT"])
    if config.ammo_reward or config.ammo_penalty:
        delta = sum(now[k] - prev[k] for k in AMMO_POOLS)
        terms["ammo"] = config.ammo_reward * delta if delta > 0 else config.ammo_penalty * delta
    if config.health_penalty or config.health_gain_scale:
        delta = max(now["HEALTH"], 0.0) - max(prev["HEALTH"], 0.0)
        terms["health"] = (config.health_gain_scale if delta > 0 else config.health_penalty) * delta
    new_max_x = max(max_x, now["POSITION_X"])
    terms["progress"] = config.progress_scale * (new_max_x - max_x)
    return terms, new_max_x


@pytest.mark.parametrize("fn", [shaping_reward_index_lookup, shaping_reward_only_active_terms])
def test_shaping_reward_variants(fn):
    assert_passes(check_shaping_reward(fn, quiet=True))


# ============================================================================================
# ex07: masked_lstm_unroll, sequence_minibatches, reunroll_logprobs
# ============================================================================================
def masked_lstm_unroll_where(lstm, features, lstm_state, starts):
    """torch.where for the reset, the outputs written into a preallocated tensor."""
    h, c = lstm_state
    outputs = features.new_empty(features.shape[0], features.shape[1], lstm.hidden_size)
    for t in range(features.shape[0]):
        reset = starts[t].bool().view(1, -1, 1)
        h = torch.where(reset, torch.zeros_like(h), h)
        c = torch.where(reset, torch.zeros_like(c), c)
        out, (h, c) = lstm(features[t].unsqueeze(0), (h, c))
        outputs[t] = out[0]
    return outputs, (h, c)


def masked_lstm_unroll_segments(lstm, features, lstm_state, starts):
    """One nn.LSTM call per segment between the steps where some env starts an episode (fewer calls)."""
    h, c = lstm_state
    T = features.shape[0]
    cuts = [0] + [t for t in range(1, T) if bool(starts[t].any())] + [T]
    pieces = []
    for begin, end in zip(cuts[:-1], cuts[1:]):
        keep = (1.0 - starts[begin])[None, :, None]
        out, (h, c) = lstm(features[begin:end], (h * keep, c * keep))
        pieces.append(out)
    return torch.cat(pieces), (h, c)


def masked_lstm_unroll_cells(lstm, features, lstm_state, starts):
    """nn.LSTMCell sharing the nn.LSTM's parameters, one layer after the other over the whole sequence."""
    h0, c0 = lstm_state
    x, hs, cs = features, [], []
    for layer in range(lstm.num_layers):
        cell = nn.LSTMCell(x.shape[-1], lstm.hidden_size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, name, getattr(lstm, f"{name}_l{layer}"))
        h, c, outs = h0[layer], c0[layer], []
        for t in range(x.shape[0]):
            keep = (1.0 - starts[t]).unsqueeze(-1)
            h, c = cell(x[t], (h * keep, c * keep))
            outs.append(h)
        x = torch.stack(outs)
        hs.append(h)
        cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


@pytest.mark.parametrize("fn", [masked_lstm_unroll_where, masked_lstm_unroll_segments, masked_lstm_unroll_cells])
def test_masked_lstm_unroll_variants(fn):
    assert_passes(check_masked_lstm_unroll(fn, quiet=True))


def sequence_minibatches_numpy(num_steps, num_envs, num_minibatches, rng):
    """NumPy int64 arrays instead of tensors, np.array_split, the flat indices by broadcasting."""
    out = []
    for group in np.array_split(rng.permutation(num_envs), num_minibatches):
        flat = (np.arange(num_steps)[:, None] * num_envs + group[None, :]).reshape(-1)
        out.append((flat.astype(np.int64), group.astype(np.int64)))
    return out


def sequence_minibatches_torch(num_steps, num_envs, num_minibatches, rng):
    """The permutation as a tensor, torch.chunk, index arithmetic in torch, a generator of pairs."""
    order = torch.as_tensor(rng.permutation(num_envs), dtype=torch.long)
    steps = torch.arange(num_steps).unsqueeze(1) * num_envs
    return ((torch.flatten(steps + group), group) for group in torch.chunk(order, num_minibatches))


def sequence_minibatches_choice_sorted(num_steps, num_envs, num_minibatches, rng):
    """rng.choice instead of rng.permutation, and each group sorted: the order inside a minibatch changes nothing
    (the check needed a fix: with one minibatch it used to call the always-sorted group "not shuffled")."""
    order = rng.choice(num_envs, size=num_envs, replace=False)
    out = []
    for group in np.sort(order.reshape(num_minibatches, -1), axis=1):
        flat = (np.arange(num_steps)[:, None] * num_envs + group).reshape(-1)
        out.append((torch.as_tensor(flat), torch.as_tensor(group)))
    return out


@pytest.mark.parametrize("fn", [sequence_minibatches_numpy, sequence_minibatches_torch,
                                sequence_minibatches_choice_sorted])
def test_sequence_minibatches_variants(fn):
    assert_passes(check_sequence_minibatches(fn, quiet=True))


def reunroll_logprobs_index_select(agent, obs, actions, starts, initial_state, env_idx):
    """index_select and flatten(0, 1); the log-probs returned as (T, n)."""
    h0, c0 = initial_state
    idx = env_idx.long()
    out = agent.get_action_and_value(obs.index_select(1, idx).flatten(0, 1),
                                     (h0.index_select(1, idx), c0.index_select(1, idx)),
                                     starts.index_select(1, idx).flatten(), actions.index_select(1, idx).flatten())
    return out.logprob.view(obs.shape[0], len(idx))


def reunroll_logprobs_list_index(agent, obs, actions, starts, initial_state, env_idx):
    """The envs as a Python list index; the state passed as a tuple built by a comprehension."""
    envs = env_idx.tolist()
    T = obs.shape[0]
    state = tuple(s[:, envs] for s in initial_state)
    return agent.get_action_and_value(obs[:, envs].reshape(T * len(envs), *obs.shape[2:]), state,
                                      starts[:, envs].reshape(-1), actions[:, envs].reshape(-1)).logprob


@pytest.mark.parametrize("fn", [reunroll_logprobs_index_select, reunroll_logprobs_list_index])
def test_reunroll_logprobs_variants(fn):
    assert_passes(check_reunroll_logprobs(fn, quiet=True))


# ============================================================================================
# ex08: gaussian_sample_and_score, clip_and_score, RunningObsNormalizer
# ============================================================================================
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_by_hand_float64(mean, logstd, action=None, deterministic=False):
    """randn_like noise (the contract's global generator), the log-density and entropy written out in float64."""
    logstd = logstd.expand_as(mean)
    if action is None:
        action = mean if deterministic else mean + logstd.exp() * torch.randn_like(mean)
    m, ls, a = mean.double(), logstd.double(), action.double()
    logprob = (-0.5 * ((a - m) / ls.exp()) ** 2 - ls - _LOG_SQRT_2PI).sum(-1)
    entropy = (0.5 + _LOG_SQRT_2PI + ls).sum(-1)
    return action, logprob.float(), entropy.float()


def gaussian_independent(mean, logstd, action=None, deterministic=False):
    """Independent(Normal(...), 1): the sums over the action dimensions done by the distribution."""
    dist = Independent(Normal(mean, torch.exp(logstd).expand_as(mean)), 1)
    if action is None:
        action = dist.mean if deterministic else dist.rsample()
    return action, dist.log_prob(action), dist.entropy()


def gaussian_multivariate(mean, logstd, action=None, deterministic=False):
    """A MultivariateNormal with a diagonal scale_tril: the same distribution, other code paths."""
    dist = MultivariateNormal(mean, scale_tril=torch.diag_embed(logstd.exp().expand_as(mean)))
    if action is None:
        action = mean if deterministic else dist.rsample()
    return action, dist.log_prob(action), dist.entropy()


@pytest.mark.parametrize("fn", [gaussian_by_hand_float64, gaussian_independent, gaussian_multivariate])
def test_gaussian_sample_and_score_variants(fn):
    assert_passes(check_gaussian_sample_and_score(fn, quiet=True))


def clip_and_score_numpy(raw_action, mean, logstd, low, high):
    """np.clip for the env's action (a float32 array), the log-density by hand."""
    env_action = np.clip(raw_action.detach().cpu().numpy(), low, high).astype(np.float32)
    std = logstd.exp()
    logprob = (-0.5 * ((raw_action - mean) / std) ** 2 - logstd - _LOG_SQRT_2PI).sum(-1)
    return env_action, logprob


def clip_and_score_min_max(raw_action, mean, logstd, low, high):
    """torch.minimum/maximum against bound tensors, Independent(Normal) for the log-prob."""
    lo, hi = torch.from_numpy(low), torch.from_numpy(high)
    env_action = torch.maximum(torch.minimum(raw_action, hi), lo)
    dist = Independent(Normal(mean, logstd.exp().expand_as(mean)), 1)
    return env_action, dist.log_prob(raw_action)


@pytest.mark.parametrize("fn", [clip_and_score_numpy, clip_and_score_min_max])
def test_clip_and_score_variants(fn):
    assert_passes(check_clip_and_score(fn, quiet=True))


class RunningObsNormalizerNumpy:
    """Statistics as NumPy float64 arrays, np.var, normalisation in NumPy; float32 tensors out."""

    def __init__(self, obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON):
        self.mean, self.var, self.count = np.zeros(obs_dim), np.ones(obs_dim), 1e-4
        self.clip, self.epsilon, self.update_running_mean = clip, epsilon, True

    def update(self, batch):
        x = np.asarray(batch, dtype=np.float64)
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + np.square(delta) * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def normalize(self, obs):
        x = (np.asarray(obs, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.epsilon)
        return torch.from_numpy(np.clip(x, -self.clip, self.clip).astype(np.float32))

    def __call__(self, obs):
        if self.update_running_mean:
            self.update(obs)
        return self.normalize(obs)


class RunningObsNormalizerSums:
    """Keeps the running sum of squared deviations (M2) as well, in float64 tensors; rsqrt for the scale."""

    def __init__(self, obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON):
        self.count = 1e-4
        self.mean = torch.zeros(obs_dim, dtype=torch.float64)
        self.m2 = torch.ones(obs_dim, dtype=torch.float64) * self.count  # var = m2 / count = 1
        self.clip, self.epsilon, self.update_running_mean = clip, epsilon, True

    @property
    def var(self):
        return self.m2 / self.count

    def update(self, batch):
        x = batch.double()
        n = x.shape[0]
        batch_mean = x.mean(0)
        delta = batch_mean - self.mean
        total = self.count + n
        self.m2 = self.m2 + ((x - batch_mean) ** 2).sum(0) + delta ** 2 * self.count * n / total
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def normalize(self, obs):
        scaled = (obs.double() - self.mean) * torch.rsqrt(self.var + self.epsilon)
        return scaled.clamp(-self.clip, self.clip).to(torch.float32)

    def __call__(self, obs):
        if self.update_running_mean:
            self.update(obs)
        return self.normalize(obs)


class RunningObsNormalizerModule(nn.Module):
    """An nn.Module with float64 buffers (saved with a state_dict), torch.var_mean, forward instead of __call__."""

    def __init__(self, obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON):
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.epsilon, self.update_running_mean = clip, epsilon, True

    @torch.no_grad()
    def update(self, batch):
        batch_var, batch_mean = torch.var_mean(batch.double(), dim=0, unbiased=False)
        n = batch.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.var = (self.var * self.count + batch_var * n + delta.square() * self.count * n / total) / total
        self.mean = self.mean + delta * n / total
        self.count = total

    def normalize(self, obs):
        z = (obs.double() - self.mean) / (self.var + self.epsilon).sqrt()
        return z.clamp(-self.clip, self.clip).to(obs.dtype)

    def forward(self, obs):
        if self.update_running_mean:
            self.update(obs)
        return self.normalize(obs)


@pytest.mark.parametrize("cls", [RunningObsNormalizerNumpy, RunningObsNormalizerSums, RunningObsNormalizerModule])
def test_running_obs_normalizer_variants(cls):
    assert_passes(check_running_obs_normalizer(cls, quiet=True))
