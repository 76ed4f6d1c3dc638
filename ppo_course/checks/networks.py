"""Checks for ex01 (policy network and sampling) and ex02 (actor-critic).

Every check compares the learner's code with the package's reference
(:mod:`ppo_course.networks`, ``torch.distributions.Categorical``) on fixed, seeded inputs and
raises :class:`~ppo_course.checks._core.Diagnosis` with the most specific explanation it can find.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.distributions import Categorical

from ppo_course.networks import HIDDEN_GAIN, POLICY_GAIN, VALUE_GAIN, layer_init as _reference_layer_init
from ppo_course.networks import sample_and_score as _reference_sample_and_score

from ._core import Diagnosis, close, expect_tensor, fmt, require_signature, run_check

__all__ = ["check_policy_network", "check_sampling", "check_layer_init", "check_actor_critic"]

# Fixed logits for the sampling check: a clear preference, a uniform row, large logits (naive exp
# overflows in float32), a peaked row and a near-uniform one.
_LOGITS = torch.tensor([
    [2.0, 0.5, -1.0, 0.8],
    [0.0, 0.0, 0.0, 0.0],
    [100.0, 90.0, 95.0, 99.0],
    [-3.0, 4.0, 0.5, -1.0],
    [0.01, -0.02, 0.03, 0.0],
])
_LARGE_ROW = 2
# Actions to score (the update phase): none of them the most likely one of its row, so that an argmax shows.
_GIVEN = torch.tensor([2, 3, 1, 0, 1])


def _observations(batch: int, obs_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, obs_dim, generator=torch.Generator().manual_seed(seed))


def _batch_shape(t: torch.Tensor, name: str, batch: int, extra: str = "") -> None:
    if tuple(t.shape) == (batch,):
        return
    if tuple(t.shape) == (batch, 1):
        raise Diagnosis(f"{name} has shape (batch, 1) = {tuple(t.shape)} instead of (batch,) = ({batch},): "
                        f"squeeze the last axis with .squeeze(-1){extra}")
    if t.dim() == 0 and batch == 1:
        raise Diagnosis(f"{name} has shape () for a batch of one observation: a bare .squeeze() also "
                        "dropped the batch axis; use .squeeze(-1)")
    raise Diagnosis(f"{name} should have shape (batch,) = ({batch},), got {tuple(t.shape)}")


# --------------------------------------------------------------------------------------------
# ex01 task 1: PolicyNetwork
# --------------------------------------------------------------------------------------------
def _build_policy(PolicyNetwork, obs_dim: int, n_actions: int, hidden: int):
    """A seeded ``PolicyNetwork(obs_dim, n_actions, hidden_size=hidden)`` and its named parameters: an
    nn.Module with parameters, one layer ``hidden`` wide."""
    torch.manual_seed(0)
    net = PolicyNetwork(obs_dim, n_actions, hidden_size=hidden)
    if not isinstance(net, nn.Module):
        raise Diagnosis("PolicyNetwork must subclass nn.Module (class PolicyNetwork(nn.Module)) "
                        "and call super().__init__() first")
    params = list(net.named_parameters())
    if not params:
        raise Diagnosis("the network has no parameters: create the layers in __init__ and store them "
                        "as attributes (self.net = nn.Sequential(...)), after super().__init__()")
    if not any(hidden in p.shape for _, p in params):
        raise Diagnosis(f"hidden_size is ignored: PolicyNetwork({obs_dim}, {n_actions}, hidden_size={hidden}) "
                        f"has no layer of width {hidden}")
    return net, params


def _check_logits(net, batch: int, obs_dim: int, n_actions: int) -> None:
    """forward on a batch: (batch, n_actions) finite float32 raw logits, each row from its own observation."""
    obs = _observations(batch, obs_dim, seed=batch)
    out = expect_tensor(net(obs), "forward's output")
    if tuple(out.shape) != (batch, n_actions):
        if out.dim() == 1 and batch == 1 and out.shape[0] == n_actions:
            raise Diagnosis("for a batch of one observation forward returned shape "
                            f"{tuple(out.shape)}: keep the batch axis, (1, {n_actions})")
        raise Diagnosis(f"forward should return (batch, n_actions) = ({batch}, {n_actions}) for obs of "
                        f"shape {tuple(obs.shape)} (obs_dim={obs_dim}), got {tuple(out.shape)}")
    if out.dtype != torch.float32:
        raise Diagnosis(f"logits should be float32, got {out.dtype}")
    if not torch.isfinite(out).all():
        raise Diagnosis("forward returned NaN or inf")
    if batch > 1:
        if (out >= 0).all() and close(out.sum(-1), torch.ones(batch), atol=1e-4):
            raise Diagnosis("forward returns probabilities (rows sum to 1): return raw logits; "
                            "the softmax happens inside the distribution (Categorical(logits=...))")
        if (out >= 0).all() and close(out.sum(0), torch.ones(n_actions), atol=1e-4):
            raise Diagnosis("forward applies a softmax over the batch dimension (columns sum to 1): "
                            "return raw logits, with no softmax at all")
        single = net(obs[:1])
        if not close(single, out[:1], atol=1e-5):
            raise Diagnosis("the logits of one observation change with the rest of the batch "
                            "(batch-wise normalisation?): each row must depend on its own observation only")


def _check_depends_on_input(net, obs_dim: int) -> None:
    """Different observations get different logits."""
    with torch.no_grad():
        out = net(_observations(32, obs_dim, seed=32))
    if close(out, out[:1].expand_as(out), atol=1e-6):
        raise Diagnosis(f"forward ignores its input: every observation gets the same logits {fmt(out[0])}")


def _check_non_linear(net, obs_dim: int) -> None:
    """f(a + b) - f(a) - f(b) + f(0) is 0 for an affine map."""
    a, b = _observations(4, obs_dim, 11), _observations(4, obs_dim, 12)
    zero = torch.zeros(4, obs_dim)
    with torch.no_grad():
        gap = net(a + b) - net(a) - net(b) + net(zero)
    if gap.abs().max() < 1e-5:
        raise Diagnosis("forward is linear in the observation: stacked nn.Linear layers without an "
                        "activation between them collapse into one; add nn.Tanh() after each hidden layer")


def _check_gradients_reach(net, params, obs_dim: int, n_actions: int) -> None:
    """The gradient of a weighted sum of the logits reaches every parameter."""
    net.zero_grad()
    obs = _observations(16, obs_dim, 3)
    weights = torch.randn(16, n_actions, generator=torch.Generator().manual_seed(4))
    out = net(obs)
    if not out.requires_grad:
        raise Diagnosis("forward's logits carry no gradient (a .detach(), torch.no_grad() or a NumPy round trip "
                        "in forward): the policy could not learn")
    (out * weights).sum().backward()
    for name, p in params:
        if p.grad is None or not torch.any(p.grad != 0):
            raise Diagnosis(f"parameter '{name}' gets no gradient: a layer created but not used in forward, "
                            "or a .detach() / torch.no_grad() inside forward")


def _perturbed(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with seeded noise added to every parameter."""
    other = copy.deepcopy(net)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.dtype))
    return other


def _check_function(net, obs_dim: int, n_actions: int) -> None:
    """The logits depend on the input, non-linearly, and the gradient reaches every parameter. These are properties
    of the function the network can represent, not of its initial values: a failure counts only if a copy with
    perturbed parameters fails too (a policy head initialised to zero gives every observation the same logits,
    and the hidden layers no gradient, until its first update -- a valid choice)."""
    def properties(model):
        _check_depends_on_input(model, obs_dim)
        _check_non_linear(model, obs_dim)
        _check_gradients_reach(model, list(model.named_parameters()), obs_dim, n_actions)

    try:
        properties(net)
    except Diagnosis as first:
        try:
            other = _perturbed(net)
        except Exception:  # noqa: BLE001 - a module deepcopy cannot copy: keep the diagnosis
            raise first from None
        try:
            properties(other)
        except Diagnosis:
            raise first from None


def _check_layer_sequence(net: nn.Module) -> None:
    """No nn.Sequential holds two nn.Linear layers in a row (they collapse into one linear map)."""
    for seq_name, seq in net.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (first, a), (second, b) in zip(children, children[1:]):
            if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
                where = f"{seq_name}." if seq_name else ""
                raise Diagnosis(f"two nn.Linear layers in a row ('{where}{first}' then '{where}{second}') with no "
                                "activation between them: together they are one linear map, so the network has a "
                                "hidden layer fewer than it seems; put nn.Tanh() after each hidden nn.Linear "
                                "(Linear, Tanh, Linear, Tanh, Linear)")


def _logits_logprob(model, obs, target):
    return torch.log_softmax(model(obs), dim=-1).gather(1, target[:, None]).squeeze(1)


def _check_can_commit(net: nn.Module, obs_dim: int, n_actions: int, logprob=_logits_logprob) -> None:
    """A policy must be able to become near-deterministic: up to 150 Adam steps raising log pi(target | s)
    (``logprob(model, obs, target)``) for four fixed observations must reach pi(target | s) > 0.95 for
    each (a trained lander is this sure). Logits squashed into a bounded range (a tanh or a clamp on the
    output layer) or a softmax applied before the distribution's own cap the probability below that."""
    model = copy.deepcopy(net)
    g = torch.Generator().manual_seed(11)
    obs = torch.randn(4, obs_dim, generator=g)
    target = torch.arange(4) % n_actions
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):  # an MLP with raw logits gets there in about ten
        logp = logprob(model, obs, target)
        if bool((logp.detach() > math.log(0.95)).all()):
            return
        optimizer.zero_grad()
        (-logp.mean()).backward()
        optimizer.step()
    probs = logprob(model, obs, target).detach().exp()
    raise Diagnosis(f"the policy cannot become sure of an action: after 150 Adam steps towards one action per "
                    f"observation the best it gives that action is {fmt(probs)} (a trained policy needs > 0.95). "
                    "Is the output layer squashed (tanh, sigmoid, clamp) or already a softmax? The policy head "
                    "must return raw, unbounded logits")


def check_policy_network(PolicyNetwork, quiet: bool = False):
    """Check an actor network class ``PolicyNetwork(obs_dim, n_actions, hidden_size=64)``.

    Contract: an ``nn.Module`` whose ``forward(obs)`` maps ``(batch, obs_dim)`` float32 observations
    to ``(batch, n_actions)`` float32 **logits** (unnormalised scores; the softmax happens inside
    the distribution). Verified with LunarLander's sizes (8, 4) and others, batch 1 and larger:
    shapes and dtype, raw logits rather than probabilities, rows independent of each other,
    output depending (non-linearly) on the input, ``hidden_size`` used, gradients reaching every
    parameter (these three on the network as built or, failing that, on a copy with perturbed
    parameters, so that the initial values do not matter: a zero-initialised head is fine), no
    two ``nn.Linear`` layers in a row in an ``nn.Sequential``, and the ability to become sure of an
    action when trained towards it (unbounded logits).

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        sizes = [(8, 4, 64), (3, 2, 16), (5, 7, 32)]
        for obs_dim, n_actions, hidden in sizes:
            net, params = _build_policy(PolicyNetwork, obs_dim, n_actions, hidden)
            for batch in (1, 32):
                _check_logits(net, batch, obs_dim, n_actions)
            _check_function(net, obs_dim, n_actions)
            _check_layer_sequence(net)
        _check_can_commit(net, obs_dim, n_actions)  # on the last size built: one is enough
        return ("(batch, obs_dim) -> (batch, n_actions) float32 logits for sizes (8, 4), (3, 2), (5, 7) and batch 1; "
                "raw logits, rows independent, non-linear, gradients reach every parameter; trained towards one "
                "action per observation it becomes > 95 % sure")

    return run_check("PolicyNetwork", body, hint="an MLP: Linear, Tanh, Linear, Tanh, Linear -> logits", quiet=quiet)


# --------------------------------------------------------------------------------------------
# ex01 task 2: sample_and_score
# --------------------------------------------------------------------------------------------
def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected.clamp_min(1e-12)).sum())


def _sampling_shapes(call, logits):
    """``call(logits)``: (batch,) action, logprob and entropy (batch 1 too), int64 actions in range."""
    batch, n = logits.shape
    action, logprob, entropy = call(logits)
    _batch_shape(action, "action", batch)
    _batch_shape(logprob, "logprob", batch)
    if tuple(entropy.shape) == (batch, n):
        raise Diagnosis(f"entropy has shape (batch, n_actions) = {tuple(entropy.shape)}: it is not summed over "
                        "actions; H = -sum_a pi(a) log pi(a), .sum(-1)")
    _batch_shape(entropy, "entropy", batch)
    for name, t in zip(("action", "logprob", "entropy"), call(logits[:1])):
        _batch_shape(t, f"{name} (batch of one)", 1)
    if action.dtype != torch.int64:
        raise Diagnosis(f"action should be int64 (torch.long) indices, got {action.dtype}")
    if action.min() < 0 or action.max() >= n:
        raise Diagnosis(f"actions must be in 0..{n - 1}, got {action.tolist()}")
    return action, logprob, entropy


def _sampling_logprob(logits, action, logprob) -> None:
    """logprob is Categorical(logits).log_prob(action), finite for large logits too."""
    expected = Categorical(logits=logits).log_prob(action)
    rows = torch.arange(logits.shape[0])
    if not torch.isfinite(logprob).all():
        bad = int(torch.nonzero(~torch.isfinite(logprob))[0])
        if bad == _LARGE_ROW:
            raise Diagnosis(f"log-probs are NaN/inf for large logits {fmt(logits[bad])}: exp(logits) overflowed "
                            "in float32; use torch.log_softmax(logits, -1) or Categorical(logits=logits)")
        raise Diagnosis(f"logprob is not finite for logits {fmt(logits[bad])}, action {int(action[bad])}: "
                        "use torch.log_softmax(logits, -1), not log(softmax)")
    if not close(logprob, expected):
        if close(logprob, expected.exp()):
            raise Diagnosis("returned probabilities instead of log-probabilities: PPO's ratio is "
                            "exp(logprob_new - logprob_old); take log_softmax, not softmax")
        if close(logprob, logits[rows, action]):
            raise Diagnosis("log-probs come from unnormalised probabilities: you gathered the raw logits "
                            "(or log of exp(logits)); subtract logsumexp -- use torch.log_softmax(logits, -1)")
        if close(logprob, torch.log_softmax(logits, 0)[rows, action]):
            raise Diagnosis("softmax over the wrong dimension (dim=0, the batch): normalise over the actions, "
                            "dim=-1")
        i = int((logprob - expected).abs().argmax())
        if close(logprob[i], torch.log_softmax(logits[i], -1).max()):
            raise Diagnosis(f"logprob is the log-probability of the most likely action, not of the returned "
                            f"action (row {i}: action {int(action[i])})")
        raise Diagnosis(f"logprob is not log pi(action): logits {fmt(logits[i])}, action {int(action[i])}: "
                        f"expected {float(expected[i]):.4f}, got {float(logprob[i]):.4f}")


def _sampling_entropy(logits, logprob, entropy) -> None:
    """entropy is Categorical(logits).entropy(): summed over actions, in nats, >= 0."""
    n = logits.shape[1]
    ent = Categorical(logits=logits).entropy()
    if not close(entropy, ent):
        if close(entropy, -ent):
            raise Diagnosis("entropy has the wrong sign: H = -sum_a pi(a) log pi(a) is >= 0")
        if close(entropy, ent / n):
            raise Diagnosis("entropy is averaged over actions instead of summed: H = -sum_a pi(a) log pi(a)")
        if close(entropy, ent / math.log(2)):
            raise Diagnosis("entropy is in bits (log2); use the natural log (nats)")
        if close(entropy, -logprob):
            raise Diagnosis("entropy is -logprob of the sampled action (a one-sample estimate): compute the "
                            "exact sum over all actions, -sum_a pi(a) log pi(a)")
        if close(entropy, -(torch.softmax(logits, 0) * torch.log_softmax(logits, 0)).sum(-1)):
            raise Diagnosis("entropy uses a softmax over the wrong dimension (the batch): use dim=-1")
        i = int((entropy - ent).abs().argmax())
        raise Diagnosis(f"entropy is off: logits {fmt(logits[i])}: expected {float(ent[i]):.4f} nats, "
                        f"got {float(entropy[i]):.4f}")


def _sampling_gradients(call, logits) -> None:
    """PPO's update differentiates logprob and entropy w.r.t. the logits."""
    leaf = logits.clone().requires_grad_()
    _, lp, en = call(leaf)
    if not lp.requires_grad:
        raise Diagnosis("logprob is detached from the logits (.item(), numpy, .detach() or torch.no_grad()): "
                        "PPO's update needs its gradient")
    if not en.requires_grad:
        raise Diagnosis("entropy is detached from the logits: the entropy bonus needs its gradient")
    (lp.sum() + en.sum()).backward()
    if leaf.grad is None or not torch.isfinite(leaf.grad).all():
        raise Diagnosis("the gradient of logprob w.r.t. the logits is NaN/inf: use log_softmax, not log(softmax)")


def _sampling_frequencies(call, n: int) -> None:
    """Frequencies over many seeded draws match softmax(logits) (chi-square test)."""
    groups = torch.tensor([[1.0, 0.0, -1.0, 0.5], [-1.0, 0.5, 2.0, 0.0]])
    m = 4000
    big = groups.repeat_interleave(m, dim=0)
    draws = call(big)[0]
    for g in range(len(groups)):
        acts = draws[g * m:(g + 1) * m].long().flatten()
        counts = torch.bincount(acts.clamp(0, n - 1), minlength=n).float()
        probs = torch.softmax(groups[g], -1)
        if int(counts.max()) == m:
            if int(counts.argmax()) == int(groups[g].argmax()):
                raise Diagnosis(f"argmax instead of sampling: {m} draws from logits {fmt(groups[g])} all chose "
                                f"action {int(groups[g].argmax())}; sample from the distribution "
                                "(Categorical(logits=...).sample()) so that every action gets explored")
            raise Diagnosis(f"every one of {m} draws from logits {fmt(groups[g])} chose action "
                            f"{int(counts.argmax())}: actions must be sampled from softmax(logits)")
        chi2 = _chi_square(counts, probs)
        if chi2 > 25.0:  # 3 degrees of freedom: p < 2e-5 for a correct sampler
            freqs = counts / m
            if _chi_square(counts, torch.full((n,), 1.0 / n)) < 25.0:
                raise Diagnosis(f"actions are uniformly random, not drawn from softmax(logits): logits "
                                f"{fmt(groups[g])}, frequencies {fmt(freqs)}, expected {fmt(probs)}")
            raise Diagnosis(f"sampled frequencies do not match softmax(logits) {fmt(groups[g])}: expected "
                            f"{fmt(probs)}, got {fmt(freqs)} over {m} draws")


def _sampling_scores_given(call, logits) -> None:
    """With ``action`` given (the update phase): that action back, its log-prob, differentiable; also with
    ``deterministic=True``, which only concerns choosing."""
    expected_lp = _reference_sample_and_score(logits, _GIVEN)[1]
    sampled = call(logits)[0]
    action, logprob, entropy = call(logits, action=_GIVEN.clone())
    _batch_shape(logprob, "logprob of given actions", len(_GIVEN))
    if not torch.equal(action.long(), _GIVEN):
        if torch.equal(action.long(), sampled.long()):
            raise Diagnosis("when actions are given (the update phase) return them with their log-probs; you "
                            "sampled new ones: choose an action only if action is None")
        raise Diagnosis(f"when actions are given, return them unchanged: given {_GIVEN.tolist()}, got "
                        f"{action.tolist()}")
    if not close(logprob, expected_lp):
        if close(logprob, Categorical(logits=logits).log_prob(sampled)):
            raise Diagnosis("the log-probs returned with given actions are those of freshly sampled actions: score "
                            "the given ones, log pi(action)")
        i = int((logprob - expected_lp).abs().argmax())
        raise Diagnosis(f"logprob of the given action is not log pi(action): logits {fmt(logits[i])}, action "
                        f"{int(_GIVEN[i])}: expected {float(expected_lp[i]):.4f}, got {float(logprob[i]):.4f}")
    _sampling_entropy(logits, logprob, entropy)
    leaf = logits.clone().requires_grad_()
    if not call(leaf, action=_GIVEN.clone())[1].requires_grad:
        raise Diagnosis("the log-probs of given actions are detached from the logits: the update's ratio needs "
                        "their gradient")
    if not torch.equal(call(logits, action=_GIVEN.clone(), deterministic=True)[0].long(), _GIVEN):
        raise Diagnosis("with actions given, deterministic=True must not replace them: it only decides how an "
                        "action is chosen when action is None")


def _sampling_deterministic(call, logits) -> None:
    """``deterministic=True`` (evaluation): the most likely action of each row, scored like any other."""
    top2 = logits.topk(2, dim=-1).values
    rows = torch.nonzero(top2[:, 0] > top2[:, 1]).flatten()  # rows whose argmax is unique
    best = logits.argmax(dim=-1)
    action, logprob, _ = call(logits, deterministic=True)
    if not torch.equal(action[rows].long(), best[rows]):
        if torch.equal(action.long(), call(logits)[0].long()):
            raise Diagnosis("deterministic=True is ignored: it must return the most likely action of each row, "
                            f"logits.argmax(-1) = {best[rows].tolist()}, not a sample")
        raise Diagnosis(f"deterministic=True should return the most likely action of each row (the argmax of the "
                        f"logits), {best[rows].tolist()}, got {action[rows].tolist()}")
    expected_lp = _reference_sample_and_score(logits, best)[1]
    if not close(logprob[rows], expected_lp[rows]):
        raise Diagnosis("with deterministic=True the log-prob returned is not that of the chosen (most likely) "
                        "action")


_SIGNATURE = "sample_and_score(logits, action=None, deterministic=False)"


def check_sampling(sample_and_score, quiet: bool = False):
    """Check ``sample_and_score(logits, action=None, deterministic=False) -> (action, logprob, entropy)``.

    Contract: that of :func:`ppo_course.networks.sample_and_score`. ``logits`` is
    ``(batch, n_actions)`` float32; with ``action`` None, ``action`` is ``(batch,)`` int64 drawn from
    softmax(logits), or its argmax when ``deterministic``; with ``action`` given (``(batch,)`` int64,
    the update phase) the same actions come back, scored. ``logprob`` is ``(batch,)`` log pi(action),
    differentiable w.r.t. the logits; ``entropy`` is ``(batch,)`` in nats, summed over actions.
    Compared with ``Categorical(logits=logits)`` and the package's ``sample_and_score`` on fixed logits
    (large ones included) and batch 1; the frequencies of 8,000 seeded draws must match the softmax
    (chi-square test), which catches argmax.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def call(logits, **kwargs):
        torch.manual_seed(0)
        out = sample_and_score(logits, **kwargs)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise Diagnosis("sample_and_score should return a tuple (action, logprob, entropy)")
        return [expect_tensor(x, n) for x, n in zip(out, ("action", "logprob", "entropy"))]

    def body():
        require_signature(sample_and_score, _SIGNATURE, _LOGITS, action=None, deterministic=False)
        logits = _LOGITS.clone()
        action, logprob, entropy = _sampling_shapes(call, logits)
        _sampling_logprob(logits, action, logprob)
        _sampling_entropy(logits, logprob, entropy)
        _sampling_gradients(call, logits)
        _sampling_frequencies(call, logits.shape[1])
        _sampling_scores_given(call, logits)
        _sampling_deterministic(call, logits)
        return ("shapes (batch,) incl. batch 1, int64 actions, log-probs and entropies equal Categorical(logits=...) "
                "(large logits too), differentiable, frequencies of 8,000 draws match the softmax; given actions "
                "are scored, not resampled; deterministic=True takes the argmax")

    return run_check("sample_and_score", body,
                     hint="Categorical(logits=logits): choose an action only if none is given, then log_prob and "
                          "entropy", quiet=quiet)


# --------------------------------------------------------------------------------------------
# ex02 task 1: layer_init
# --------------------------------------------------------------------------------------------
def _orthogonality(layer: nn.Module):
    """(gram, expected_identity_size) where gram is W W^T (wide) or W^T W (tall), W flattened to 2-D."""
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return gram


def _layer_init_cases():
    """(name, constructor, layer_init keyword arguments): wide, tall and square layers, a Conv2d, three gains."""
    return [
        ("nn.Linear(64, 16)", lambda: nn.Linear(64, 16), dict(std=HIDDEN_GAIN)),
        ("nn.Linear(8, 64)", lambda: nn.Linear(8, 64), dict(std=HIDDEN_GAIN, bias_const=0.5)),
        ("nn.Linear(64, 4)", lambda: nn.Linear(64, 4), dict(std=POLICY_GAIN)),
        ("nn.Linear(32, 32)", lambda: nn.Linear(32, 32), dict(std=VALUE_GAIN, bias_const=-0.25)),
        ("nn.Linear(64, 1)", lambda: nn.Linear(64, 1), dict(std=VALUE_GAIN)),
        ("nn.Conv2d(4, 8, 3)", lambda: nn.Conv2d(4, 8, 3), dict(std=HIDDEN_GAIN, bias_const=0.1)),
    ]


def _check_layer_init_case(layer_init, name: str, make, kwargs: dict) -> None:
    """``layer_init(make(), **kwargs)`` returns that layer, its weight changed in place, orthogonal with
    gain std, and every bias entry bias_const."""
    torch.manual_seed(0)
    layer = make()
    before = layer.weight.detach().clone()
    bias_before = layer.bias.detach().clone()
    returned = layer_init(layer, **kwargs)
    if returned is None:
        raise Diagnosis("layer_init returned None: return the layer, so that it can wrap a constructor "
                        "(layer_init(nn.Linear(64, 4), std=0.01))")
    if returned is not layer:
        raise Diagnosis(f"layer_init({name}) must return the layer it was given (got "
                        f"{type(returned).__name__}), so that it can wrap a constructor")
    args = ", ".join(f"{k}={v:g}" for k, v in kwargs.items())
    if not isinstance(layer.weight, nn.Parameter):
        raise Diagnosis("layer.weight is no longer an nn.Parameter: initialise it in place "
                        "(nn.init.orthogonal_(layer.weight, std))")
    if torch.equal(layer.weight.detach(), before):
        raise Diagnosis(f"weights were not changed (still PyTorch's default init) for {name}: "
                        "use nn.init.orthogonal_(layer.weight, std)")
    _check_orthogonal_gain(layer, name, args, kwargs["std"])
    _check_bias(layer, bias_before, name, args, kwargs.get("bias_const", 0.0))


def _check_orthogonal_gain(layer, name: str, args: str, std: float) -> None:
    """W W^T (or W^T W) = std^2 I: orthogonal, with the gain applied once."""
    gram = _orthogonality(layer)
    k = gram.shape[0]
    eye = torch.eye(k, dtype=gram.dtype)
    scale = float(gram.diagonal().mean())
    off = float((gram - torch.diag(gram.diagonal())).abs().max()) / max(scale, 1e-12)
    if k > 1 and off > 1e-3:
        raise Diagnosis(f"weights are not orthogonal (looks like a Gaussian/default init): for {name} the "
                        f"largest off-diagonal entry of W W^T is {off:.2f} x the diagonal; use "
                        "nn.init.orthogonal_(layer.weight, std)")
    if not torch.allclose(gram, std ** 2 * eye, rtol=1e-3, atol=1e-4 * std ** 2):
        if abs(std - 1.0) > 1e-6 and torch.allclose(gram, eye, rtol=1e-3, atol=1e-4):
            raise Diagnosis(f"gain ignored: layer_init({name}, {args}) gave W W^T = I, expected "
                            f"std^2 I = {std ** 2:g} I; pass std as the gain: nn.init.orthogonal_(w, std)")
        if torch.allclose(gram, std ** 4 * eye, rtol=1e-3, atol=1e-4 * std ** 4):
            raise Diagnosis(f"gain applied twice (or squared): layer_init({name}, {args}) gave W W^T = "
                            f"{std ** 4:g} I, expected {std ** 2:g} I")
        raise Diagnosis(f"wrong scale: layer_init({name}, {args}) gave rows of norm {math.sqrt(scale):.4g}, "
                        f"expected std = {std:g}")


def _check_bias(layer, bias_before, name: str, args: str, bias_const: float) -> None:
    """Every bias entry is bias_const."""
    bias = layer.bias.detach()
    if not torch.all(bias == bias_const):
        if torch.equal(bias, bias_before):
            raise Diagnosis(f"bias not set: layer_init({name}, {args}) left PyTorch's default bias; "
                            "use nn.init.constant_(layer.bias, bias_const)")
        if torch.all(bias == 0) and bias_const != 0:
            raise Diagnosis(f"bias_const ignored: layer_init({name}, {args}) set the bias to 0, expected "
                            f"{bias_const:g}")
        raise Diagnosis(f"layer_init({name}, {args}): every bias entry should be {bias_const:g}, got "
                        f"{fmt(bias[:4])}...")


def _check_layer_init_defaults(layer_init) -> None:
    """Default arguments: std = sqrt(2), bias 0; the layer is returned."""
    torch.manual_seed(0)
    layer = nn.Linear(16, 16)
    nn.init.constant_(layer.bias, 0.3)
    if layer_init(layer) is None:
        raise Diagnosis("layer_init returned None: return the layer, so that it can wrap a constructor "
                        "(layer_init(nn.Linear(64, 4), std=0.01))")
    gram = _orthogonality(layer)
    if not torch.allclose(gram, 2.0 * torch.eye(16, dtype=gram.dtype), atol=1e-4):
        if torch.allclose(gram, torch.eye(16, dtype=gram.dtype), atol=1e-4):
            raise Diagnosis("the default std should be sqrt(2) (W W^T = 2 I), but layer_init(layer) gave "
                            "W W^T = I: check the default argument std=math.sqrt(2)")
    if not torch.all(layer.bias == 0):
        raise Diagnosis("bias not set: with the default bias_const=0.0 every bias should be 0 "
                        f"(got {fmt(layer.bias[:4])}...)")


def _check_layer_init_without_bias(layer_init) -> None:
    """A layer without a bias: no crash, orthogonal weights."""
    layer = nn.Linear(8, 4, bias=False)
    try:
        layer_init(layer, std=1.0)
    except (AttributeError, TypeError, ValueError) as exc:
        raise Diagnosis(f"layer_init fails on a layer without a bias (nn.Linear(8, 4, bias=False)): "
                        f"{type(exc).__name__}: {exc}; set the bias only if layer.bias is not None")
    ref = _reference_layer_init(nn.Linear(8, 4, bias=False), std=1.0)
    if not torch.allclose(_orthogonality(layer), _orthogonality(ref), atol=1e-4):
        raise Diagnosis("nn.Linear(8, 4, bias=False): weights not orthogonal with gain 1")


def check_layer_init(layer_init, quiet: bool = False):
    """Check ``layer_init(layer, std=sqrt(2), bias_const=0.0) -> layer``.

    Contract: fills ``layer.weight`` with an orthogonal matrix scaled by ``std`` (so W W^T = std^2 I
    for a wide layer, W^T W = std^2 I for a tall one; a Conv2d's kernel is flattened to
    ``(out_channels, in_channels * kh * kw)``), sets every bias entry to ``bias_const`` (layers
    without a bias are left alone), and returns the same layer. Compared with
    :func:`ppo_course.networks.layer_init` on wide, tall and square Linear layers, a Conv2d and a
    bias-less layer, with gains sqrt(2), 0.01 and 1.0 and a non-zero ``bias_const``.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        for name, make, kwargs in _layer_init_cases():
            _check_layer_init_case(layer_init, name, make, kwargs)
        _check_layer_init_defaults(layer_init)
        _check_layer_init_without_bias(layer_init)
        return ("orthogonal weights with gain std (W W^T = std^2 I) for wide, tall and square Linear layers and a "
                "Conv2d; constant bias; default std sqrt(2); returns the layer; works without a bias")

    return run_check("layer_init", body, hint="nn.init.orthogonal_(layer.weight, std), then nn.init.constant_ on "
                     "the bias", quiet=quiet)


# --------------------------------------------------------------------------------------------
# ex02 task 2: ActorCritic
# --------------------------------------------------------------------------------------------
def _linear_layers(net: nn.Module):
    return [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]


def _scores(agent, obs: torch.Tensor, n_actions: int) -> torch.Tensor:
    """log pi(a | obs) for every action, (batch, n_actions), via get_action_and_value(obs, action=a)."""
    columns = []
    for a in range(n_actions):
        action = torch.full((obs.shape[0],), a, dtype=torch.int64)
        columns.append(agent.get_action_and_value(obs, action)[1])
    return torch.stack(columns, dim=-1)


_BROADCAST = ("; a (batch, 1) value minus (batch,) returns broadcasts to a (batch, batch) matrix in the value "
              "loss, silently comparing every value with every return")


def _actor_critic_outputs(agent, obs: torch.Tensor, n_actions: int):
    """get_value and a sampling get_action_and_value: (batch,) tensors (batch 1 too), int64 actions in
    range, the same value from both; returns the sampled (action, logprob, entropy)."""
    batch = obs.shape[0]
    value = expect_tensor(agent.get_value(obs), "get_value's output")
    _batch_shape(value, "get_value(x)", batch, _BROADCAST)
    _batch_shape(expect_tensor(agent.get_value(obs[:1]), "get_value's output"), "get_value(x) for a batch "
                 "of one", 1, _BROADCAST)
    torch.manual_seed(1)
    out = agent.get_action_and_value(obs)
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise Diagnosis("get_action_and_value should return (action, logprob, entropy, value)")
    action, logprob, entropy, value2 = (expect_tensor(x, n) for x, n in
                                        zip(out, ("action", "logprob", "entropy", "value")))
    for name, t in (("action", action), ("logprob", logprob), ("entropy", entropy)):
        _batch_shape(t, f"get_action_and_value: {name}", batch)
    _batch_shape(value2, "get_action_and_value: value", batch, _BROADCAST)
    for name, t in zip(("action", "logprob", "entropy", "value"), agent.get_action_and_value(obs[:1])):
        _batch_shape(t, f"get_action_and_value: {name} (batch of one)", 1)
    if action.dtype != torch.int64:
        raise Diagnosis(f"action should be int64 indices, got {action.dtype}")
    if action.min() < 0 or action.max() >= n_actions:
        raise Diagnosis(f"actions must be in 0..{n_actions - 1}")
    if not close(value2, value, atol=1e-5):
        raise Diagnosis("the value from get_action_and_value differs from get_value on the same observations")
    return action, logprob, entropy


def _actor_critic_scoring(agent, obs, action, logprob, entropy, n_actions: int) -> torch.Tensor:
    """Scoring given actions (the update phase): the given action and its log-prob, normalised and
    consistent with sampling, and the entropy that goes with them. Returns log pi(a | obs) for every a."""
    batch = obs.shape[0]
    given = (action + 1) % n_actions
    scored = agent.get_action_and_value(obs, given)
    if not torch.equal(scored[0].long(), given):
        raise Diagnosis("when an action is given (the update phase) return that action and its log-prob; "
                        "you sampled a new one (use `if action is None: action = dist.sample()`)")
    torch.manual_seed(2)
    if not close(agent.get_action_and_value(obs, given)[1], scored[1], atol=1e-6):
        raise Diagnosis("when an action is given, the log-prob returned is not that action's (it changes from "
                        "call to call): score the given action with dist.log_prob(action), not a sampled one")
    table = _scores(agent, obs, n_actions)
    if not close(table.exp().sum(-1), torch.ones(batch), atol=1e-4):
        raise Diagnosis("log-probs are not normalised: sum_a exp(logprob(a)) should be 1; build the "
                        "distribution from logits (Categorical(logits=...)) or use log_softmax")
    if not close(logprob, table.gather(-1, action.unsqueeze(-1)).squeeze(-1), atol=1e-5):
        raise Diagnosis("the log-prob returned with a sampled action is not the log-prob of that action "
                        "(scoring the same action again gives a different number)")
    expected_entropy = -(table.exp() * table).sum(-1)
    if not close(entropy, expected_entropy, atol=1e-4):
        if close(entropy, -expected_entropy, atol=1e-4):
            raise Diagnosis("entropy has the wrong sign: H = -sum_a pi(a) log pi(a) >= 0")
        raise Diagnosis(f"entropy does not match the policy: expected {float(expected_entropy[0]):.4f}, "
                        f"got {float(entropy[0]):.4f}")
    return table


def _actor_critic_init(agent, table, n_actions: int, hidden: int) -> tuple[str, str]:
    """Initialisation: one policy head (gain 0.01, near-uniform policy), one value head (gain 1), hidden
    layers orthogonal with gain sqrt(2). Returns the names of the policy and value heads."""
    linears = _linear_layers(agent)
    policy_heads = [(n, m) for n, m in linears if m.out_features == n_actions]
    value_heads = [(n, m) for n, m in linears if m.out_features == 1]
    if len(value_heads) != 1 or len(policy_heads) != 1:
        raise Diagnosis(f"expected one nn.Linear policy head with {n_actions} outputs and one value head with "
                        f"1 output, found {len(policy_heads)} and {len(value_heads)}")
    (pname, phead), (vname, vhead) = policy_heads[0], value_heads[0]
    spread = float((table.max(-1).values - table.min(-1).values).max().detach())
    pnorm = float(phead.weight.detach().norm(dim=1).mean())
    if spread > 0.1 or abs(pnorm - POLICY_GAIN) > 1e-3:
        raise Diagnosis(f"the initial policy is not near-uniform: policy head '{pname}' has rows of norm "
                        f"{pnorm:.3g} (expected gain 0.01: layer_init(nn.Linear({hidden}, {n_actions}), "
                        f"std=0.01)); log-probs differ by up to {spread:.2f} across actions")
    vnorm = float(vhead.weight.detach().norm())
    if abs(vnorm - VALUE_GAIN) > 1e-3:
        raise Diagnosis(f"value head gain: '{vname}' has weight norm {vnorm:.3g}, expected 1.0 "
                        f"(layer_init(nn.Linear({hidden}, 1), std=1.0))")
    for name, m in linears:
        if m.out_features == hidden and not torch.allclose(
                _orthogonality(m), HIDDEN_GAIN ** 2 * torch.eye(_orthogonality(m).shape[0], dtype=torch.float64),
                atol=1e-3):
            raise Diagnosis(f"hidden layer '{name}' is not orthogonally initialised with gain sqrt(2): "
                            "wrap it in layer_init(...)")
    return pname, vname


def _actor_critic_gradients(agent, obs, action, pname: str, vname: str) -> None:
    """Gradients reach both heads, through separate trunks, and every parameter."""
    params = dict(agent.named_parameters())

    def reached_by(output_fn, head: str, message: str) -> set[str]:
        """Names of the parameters the gradient of output_fn() reaches; it must include the head."""
        agent.zero_grad()
        out = output_fn()
        if not out.requires_grad:
            raise Diagnosis(message)
        out.sum().backward()
        reached = {n for n, p in params.items() if p.grad is not None and torch.any(p.grad != 0)}
        if f"{head}.weight" not in reached:
            raise Diagnosis(message)
        return reached

    actor_params = reached_by(lambda: agent.get_action_and_value(obs, action)[1], pname,
                              "no gradient reaches the policy head from the log-probs (detached logits "
                              "or torch.no_grad()?)")
    critic_params = reached_by(lambda: agent.get_value(obs), vname,
                               "no gradient reaches the value head from get_value (detached, or computed "
                               "under torch.no_grad()?)")
    reached_by(lambda: agent.get_action_and_value(obs, action)[3], vname,
               "the value returned by get_action_and_value carries no gradient to the value head (detached, or "
               "computed under torch.no_grad()?): the PPO update trains the critic through that value; return "
               "self.get_value(x) as it is")
    agent.zero_grad()
    entropy = agent.get_action_and_value(obs, action)[2]
    if entropy.requires_grad:
        entropy.sum().backward()
    if not entropy.requires_grad or params[f"{pname}.weight"].grad is None:
        raise Diagnosis("the entropy returned by get_action_and_value carries no gradient to the policy head "
                        "(detached, or computed under torch.no_grad()?): the entropy bonus acts only through its "
                        "gradient; return dist.entropy() as it is")
    shared = sorted(actor_params & critic_params)
    if shared:
        raise Diagnosis(f"actor and critic share parameters ({shared[0]}, ...): the exercise asks for two "
                        "separate MLPs, so that the value loss cannot disturb the policy's features")
    unused = sorted(set(params) - actor_params - critic_params)
    if unused:
        raise Diagnosis(f"parameter '{unused[0]}' gets no gradient from either head: a layer created but "
                        "not used")


def check_actor_critic(ActorCritic, quiet: bool = False):
    """Check an actor-critic class ``ActorCritic(obs_dim, n_actions, hidden_size=64)``.

    Contract: separate actor and critic MLPs (tanh); ``get_value(x)`` maps ``(batch, obs_dim)``
    float32 to ``(batch,)`` values; ``get_action_and_value(x, action=None)`` returns
    ``(action, logprob, entropy, value)``, each ``(batch,)``: it samples an action when ``action``
    is None and otherwise returns the given action with *its* log-probability (the update phase).
    The policy head is initialised with gain 0.01 (near-uniform initial policy), the value head with
    gain 1.0, hidden layers with sqrt(2). Verified: shapes (batch 1 too), given actions are scored
    not resampled, log-probs normalised and consistent between the two phases, entropy consistent
    with them, initial gains, gradients reaching both heads (from the log-probs, the entropy and both
    values) and the trunks kept separate, no two ``nn.Linear`` layers in a row in an ``nn.Sequential``,
    and a policy that, trained towards one action per observation, becomes more than 95 % sure of it.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        for obs_dim, n_actions, hidden in [(8, 4, 64), (3, 2, 16)]:
            torch.manual_seed(0)
            agent = ActorCritic(obs_dim, n_actions, hidden_size=hidden)
            if not isinstance(agent, nn.Module):
                raise Diagnosis("ActorCritic must subclass nn.Module and call super().__init__() first")
            obs = _observations(64, obs_dim, seed=1)
            action, logprob, entropy = _actor_critic_outputs(agent, obs, n_actions)
            table = _actor_critic_scoring(agent, obs, action, logprob, entropy, n_actions)
            pname, vname = _actor_critic_init(agent, table, n_actions, hidden)
            _actor_critic_gradients(agent, obs, action, pname, vname)
            _check_layer_sequence(agent)
        _check_can_commit(agent, obs_dim, n_actions,
                          lambda model, x, target: model.get_action_and_value(x, target)[1])
        return ("value (batch,) incl. batch 1; given actions scored not resampled; log-probs normalised and "
                "consistent; entropy; near-uniform initial policy (gain 0.01), value head gain 1, hidden sqrt(2); "
                "gradients reach both heads through separate trunks; the policy can become > 95 % sure")

    return run_check("ActorCritic", body, hint="two MLPs (actor -> logits, critic -> value) and a "
                     "Categorical(logits=...)", quiet=quiet)
