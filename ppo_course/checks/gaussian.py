"""Checks for ex08 (the Gaussian policy: continuous actions).

* :func:`check_gaussian_sample_and_score` -- sampling and scoring a diagonal Gaussian, compared with
  ``torch.distributions.Normal`` and the package's :class:`~ppo_course.networks.GaussianActorCritic`;
* :func:`check_clip_and_score` -- the bookkeeping of a bounded ``Box``: the environment gets the clipped
  action, the rollout stores the log-probability of the raw sample;
* :func:`check_running_obs_normalizer` -- running observation statistics merged batch by batch (Chan et
  al.'s parallel algorithm, as Gymnasium's ``RunningMeanStd``), the normalisation of the package's
  :class:`~ppo_course.networks.ObsNormalizer` and a frozen mode for evaluation.

A mismatch is explained by reproducing the learner's output under a specific mistake (log-probs averaged
over the action dimensions, log_std used as the std, the clipped action scored, variances averaged
without the mean-difference term, ...); a mistake is named only when it reproduces the output to
tolerance, otherwise the message says where the first difference is.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from torch.distributions import Normal

from ppo_course.networks import OBS_CLIP, OBS_EPSILON, ObsNormalizer

from ._core import Diagnosis, close, expect_tensor, fmt, raise_if_modified, require_signature, run_check

__all__ = ["check_gaussian_sample_and_score", "check_clip_and_score", "check_running_obs_normalizer"]

_LOG_2PI = math.log(2 * math.pi)
_SUM = "the dimensions are independent, so the joint density is the product and log-densities add: .sum(-1)"
_SUM_H = "the dimensions are independent, so their entropies add: .sum(-1)"


def _normal(mean: torch.Tensor, logstd: torch.Tensor) -> Normal:
    """The reference distribution, in float64: ``Normal(mean, exp(logstd))`` per action dimension."""
    mean, logstd = mean.detach().double(), logstd.detach().double()
    return Normal(mean, logstd.exp().expand_as(mean))


def _rows(t: torch.Tensor, name: str, batch: int, act_dim: int, per_dim: torch.Tensor | None = None,
          why: str = _SUM) -> None:
    """``t`` has shape ``(batch,)``; otherwise say why, naming "not summed" only when the per-dimension
    values reproduce it."""
    shape = tuple(t.shape)
    if shape == (batch,):
        return
    if shape == (batch, act_dim) and per_dim is not None and close(t, per_dim, atol=1e-4, dtype=torch.float64):
        raise Diagnosis(f"{name} has shape (batch, act_dim) = {shape}: it is not summed over the action "
                        f"dimensions; {why}")
    if shape in ((1,), ()) and batch > 1 and name == "entropy":
        raise Diagnosis(f"{name} has shape {shape} for a batch of {batch}: computed from log_std (1, act_dim) "
                        "alone, it must still give one number per row; expand log_std to the mean's shape "
                        "(logstd.expand_as(mean)) first")
    raise Diagnosis(f"{name} should have shape (batch,) = ({batch},), got {shape}")


def _float32(t, name: str, why: str = "the network's dtype") -> None:
    if t.dtype != torch.float32:
        raise Diagnosis(f"{name} should be float32 ({why}), got {t.dtype}: compute in float64 if you like, then "
                        "convert back (.float(), or .astype(np.float32) for an array)")


def _first_difference(got: torch.Tensor, want: torch.Tensor) -> int:
    diff = (got.detach().double() - want.double()).abs()
    diff[torch.isnan(diff)] = math.inf
    return int(diff.flatten().argmax())


def _logprob_variants(mean, logstd, action) -> dict[str, torch.Tensor]:
    """The ``(batch,)`` log-probabilities that common mistakes give, keyed by their diagnosis."""
    m, a = mean.detach().double(), action.detach().double()
    ls = logstd.detach().double().expand_as(m)
    per_dim = Normal(m, ls.exp()).log_prob(a)
    ref = per_dim.sum(-1)
    as_std = -(a - m) ** 2 / (2 * ls ** 2) - torch.log(ls) - 0.5 * _LOG_2PI  # NaN where log_std < 0
    return {
        f"log-probs are averaged over the action dimensions (.mean(-1)) instead of summed: {_SUM}": per_dim.mean(-1),
        "log_std is used as the standard deviation: the policy stores log sigma, so sigma = log_std.exp() "
        "(Normal(mean, log_std.exp()))": as_std.sum(-1),
        "Normal got the variance exp(log_std)^2 where it takes the standard deviation sigma = exp(log_std)":
            Normal(m, (2 * ls).exp()).log_prob(a).sum(-1),
        "the log-density lacks its -log sigma term: log N(a; mu, sigma) = -(a - mu)^2 / (2 sigma^2) - log sigma "
        "- log(2 pi) / 2 per dimension (without it a larger sigma always scores higher)": ref + ls.sum(-1),
        "the log-density lacks the constant -log(2 pi) / 2 per dimension: PPO's ratio would not notice, but "
        "log pi(a) is then not a log-probability (use Normal(...).log_prob)": ref + 0.5 * _LOG_2PI * m.shape[-1],
        "returned densities instead of log-densities: PPO's ratio is exp(logprob_new - logprob_old)": ref.exp(),
        "the log-probability has the wrong sign (a negative log-likelihood)": -ref,
    }


def _compare(got: torch.Tensor, want: torch.Tensor, variants: dict[str, torch.Tensor], where,
             tol: float = 1e-4) -> None:
    """``got`` equals ``want``; else the first variant it reproduces, else ``where(index)`` of the first difference."""
    if close(got, want, atol=tol, rtol=tol, dtype=torch.float64, finite=True):
        return
    for message, values in variants.items():
        if close(got, values, atol=tol, rtol=tol, dtype=torch.float64, finite=True):
            raise Diagnosis(message)
    raise Diagnosis(where(_first_difference(got, want)))


# --------------------------------------------------------------------------------------------
# Task 1: gaussian_sample_and_score
# --------------------------------------------------------------------------------------------
_SIGNATURE = "gaussian_sample_and_score(mean, logstd, action=None, deterministic=False)"
# Scoring cases (mean, logstd, action): an ordinary batch with log_std > 0 first (log_std used as the std
# then gives numbers, not an exception), then per-row log-stds from tiny to large (|a - mu| up to 40
# sigma) with one action dimension, then a batch of one.
_SCORE_CASES = [
    (torch.tensor([[0.0, 1.0, -0.5], [0.3, -2.0, 1.5], [1.0, 0.0, 0.2], [-1.5, 0.7, 0.0], [2.0, -0.3, -1.0]]),
     torch.tensor([[0.4, 0.9, 0.2]]),
     torch.tensor([[0.5, 0.2, -1.0], [-0.4, -2.5, 3.0], [1.0, 2.0, 0.1], [0.5, 0.7, -0.8], [4.0, -0.1, -1.3]])),
    (torch.tensor([[0.0], [1.0], [-2.0], [0.5]]), torch.tensor([[-5.0], [-1.0], [0.0], [1.5]]),
     torch.tensor([[0.27], [3.0], [-2.5], [-8.0]])),
    (torch.tensor([[0.3, -0.2]]), torch.tensor([[-0.7, 0.1]]), torch.tensor([[1.3, -0.9]])),
]


def _entropy_variants(mean, logstd, logprob) -> dict[str, torch.Tensor]:
    m, ls = mean.double(), logstd.double().expand_as(mean)
    per_dim = Normal(m, ls.exp()).entropy()
    return {
        f"the entropy is averaged over the action dimensions instead of summed: {_SUM_H}": per_dim.mean(-1),
        "the entropy has the wrong sign: H = sum over dimensions of (1 + log(2 pi)) / 2 + log sigma": -per_dim.sum(-1),
        "log_std is used as the standard deviation in the entropy: sigma = log_std.exp()":
            (0.5 + 0.5 * _LOG_2PI + torch.log(ls)).sum(-1),
        "the entropy is -logprob of the action (a one-sample estimate): a Gaussian's entropy is exact, "
        "sum over dimensions of (1 + log(2 pi)) / 2 + log sigma": -logprob.detach().double(),
        "the entropy lacks its constant (1 + log(2 pi)) / 2 per dimension (Normal(...).entropy() has it)":
            ls.sum(-1),
    }


def _gaussian_scores(call, mean, logstd, given) -> None:
    """Given actions (the update phase): returned unchanged, scored as Normal(mean, exp(logstd)), summed."""
    batch, act_dim = mean.shape
    action, logprob, entropy = call(mean, logstd, action=given.clone())
    if not close(action, given, atol=0, rtol=0, dtype=torch.float64):
        if close(action, call(mean, logstd)[0], atol=0, rtol=0, dtype=torch.float64):
            raise Diagnosis("when an action is given (the update phase) return it unchanged with its log-prob; you "
                            "sampled a new one: choose an action only if action is None")
        raise Diagnosis(f"when an action is given, return it unchanged: given {fmt(given[0])}, got {fmt(action[0])} "
                        "(first row)")
    ref = _normal(mean, logstd)
    _rows(logprob, "logprob", batch, act_dim, ref.log_prob(given))
    _float32(logprob, "logprob")
    want = ref.log_prob(given).sum(-1)
    _compare(logprob, want, _logprob_variants(mean, logstd, given), lambda i: (
        f"logprob is not log N(action; mean, exp(log_std)) summed over dimensions: mean {fmt(mean[i])}, log_std "
        f"{fmt(logstd.expand_as(mean)[i])}, action {fmt(given[i])}: expected {float(want[i]):.4f}, got "
        f"{float(logprob[i]):.4f}"))
    _rows(entropy, "entropy", batch, act_dim, ref.entropy(), _SUM_H)
    _float32(entropy, "entropy")
    want_h = ref.entropy().sum(-1)
    _compare(entropy, want_h, _entropy_variants(mean, logstd, logprob), lambda i: (
        f"entropy is off: log_std {fmt(logstd.expand_as(mean)[i])}: expected {float(want_h[i]):.4f} nats "
        f"(sum of (1 + log(2 pi)) / 2 + log sigma), got {float(entropy[i]):.4f}"))
    m, ls = mean.clone().requires_grad_(), logstd.clone().requires_grad_()
    _, lp, ent = call(m, ls, action=given.clone())
    if not lp.requires_grad or not ent.requires_grad:
        which = "logprob" if not lp.requires_grad else "entropy"
        raise Diagnosis(f"{which} of given actions is detached from mean and log_std (.detach(), .item(), NumPy or "
                        "torch.no_grad()): PPO's update differentiates it")
    got_m, got_ls = torch.autograd.grad(lp.sum(), (m, ls), allow_unused=True)
    want_m = (given - mean) / (2 * logstd).exp()
    if got_m is None or got_ls is None or not close(got_m, want_m, atol=1e-3, rtol=1e-3):
        raise Diagnosis("the gradient of logprob does not reach mean and log_std as it should ((a - mu) / sigma^2 "
                        "for the mean): score the given action with Normal(mean, log_std.exp())")


def _gaussian_sampling(call, mean, logstd) -> None:
    """Sampled actions: (batch, act_dim) float32, scored consistently, distributed as N(mean, exp(logstd))."""
    batch, act_dim = mean.shape
    action, logprob, _ = call(mean, logstd)
    if tuple(action.shape) != (batch, act_dim):
        raise Diagnosis(f"a sampled action should have the mean's shape (batch, act_dim) = {(batch, act_dim)}, "
                        f"got {tuple(action.shape)}")
    _float32(action, "action")
    want = _normal(mean, logstd).log_prob(action.detach().double()).sum(-1)
    if not close(logprob, want, atol=1e-4, dtype=torch.float64, finite=True):
        i = _first_difference(logprob, want)
        raise Diagnosis(f"the log-prob returned with a sampled action is not that action's (row {i}: action "
                        f"{fmt(action[i])}, expected {float(want[i]):.4f}, got {float(logprob[i]):.4f})")
    n = 4000
    mu, ls = torch.tensor([[0.5, -2.0, 3.0]]), torch.tensor([[-1.0, 0.0, 0.7]])
    draws = call(mu.expand(n, 3), ls)[0].detach().double()
    avg, std, sigma = draws.mean(0), draws.std(0), ls.exp().double()[0]
    if bool((std < 1e-6).all()):
        raise Diagnosis("every sampled action equals the mean: no noise was added (that is deterministic=True); "
                        "sample mean + exp(log_std) * noise")
    for got_std, mistake in ((ls.abs()[0], "log_std used as the standard deviation"),
                             (torch.ones(3), "log_std ignored (standard deviation 1)"),
                             (ls.exp()[0] ** 2, "the variance exp(log_std)^2 used as the standard deviation")):
        if close(std, got_std, atol=0.05, rtol=0.05) and not close(got_std, sigma, atol=0.05, rtol=0.05):
            raise Diagnosis(f"{n} draws with log_std {fmt(ls)} have standard deviations {fmt(std)}: {mistake}; "
                            f"sigma = log_std.exp() = {fmt(sigma)}")
    se = sigma / math.sqrt(n)
    if not bool(((avg - mu[0]).abs() < 5 * se).all() and ((std - sigma).abs() < 5 * sigma / math.sqrt(2 * n)).all()):
        raise Diagnosis(f"{n} draws from mean {fmt(mu)}, log_std {fmt(ls)} have means {fmt(avg)} and standard "
                        f"deviations {fmt(std)}: expected {fmt(mu)} and {fmt(sigma)}")


def _gaussian_reparameterised(call, mean, logstd) -> None:
    """A sampled action is mean + exp(logstd) * noise, differentiable w.r.t. both (rsample)."""
    m, ls = mean.clone().requires_grad_(), logstd.clone().requires_grad_()
    action = call(m, ls)[0]
    message = ("the sampled action is not reparameterised: no gradient reaches mean and log_std through it "
               "(.sample() and torch.normal draw without one); use Normal(...).rsample() or "
               "mean + log_std.exp() * torch.randn_like(mean)")
    if not action.requires_grad:
        raise Diagnosis(message)
    got_m, got_ls = torch.autograd.grad(action.sum(), (m, ls), allow_unused=True)
    zero = lambda g: g is None or not bool(torch.any(g != 0))  # noqa: E731
    if zero(got_m) and zero(got_ls):
        raise Diagnosis(message)
    if zero(got_ls):
        raise Diagnosis("the sampled action gets a gradient from the mean but none from log_std: the noise is "
                        "scaled by a detached std; use mean + log_std.exp() * noise without .detach()")
    want_ls = (action.detach() - mean).sum(0, keepdim=True) if logstd.shape[0] == 1 else action.detach() - mean
    if zero(got_m) or not close(got_m, torch.ones_like(mean), atol=1e-4) or not close(got_ls, want_ls, atol=1e-3):
        raise Diagnosis("the sampled action's gradient is not that of mean + exp(log_std) * noise (1 w.r.t. the "
                        "mean, exp(log_std) * noise w.r.t. log_std)")


def _gaussian_deterministic(call, mean, logstd, given) -> None:
    action, logprob, _ = call(mean, logstd, deterministic=True)
    if not close(action, mean, atol=1e-6):
        if close(action, call(mean, logstd)[0], atol=1e-6):
            raise Diagnosis("deterministic=True is ignored: it must return the mean (the most likely action), "
                            "not a sample")
        raise Diagnosis(f"deterministic=True should return the mean {fmt(mean[0])}, got {fmt(action[0])}")
    if not close(logprob, _normal(mean, logstd).log_prob(mean.double()).sum(-1), atol=1e-4, dtype=torch.float64):
        raise Diagnosis("with deterministic=True the log-prob returned is not that of the mean")
    if not close(call(mean, logstd, action=given.clone(), deterministic=True)[0], given, atol=0, rtol=0):
        raise Diagnosis("with an action given, deterministic=True must not replace it: it only decides how an "
                        "action is chosen when action is None")


def check_gaussian_sample_and_score(gaussian_sample_and_score, quiet: bool = False):
    """Check ``gaussian_sample_and_score(mean, logstd, action=None, deterministic=False)``.

    It returns ``(action, logprob, entropy)``.

    Contract: the diagonal Gaussian ``Normal(mean, exp(logstd))`` of
    :class:`ppo_course.networks.GaussianActorCritic`. ``mean`` is ``(batch, act_dim)`` float32,
    ``logstd`` ``(1, act_dim)`` (the package's ``actor_logstd``) or ``(batch, act_dim)``. With ``action``
    None the action is a reparameterised sample ``mean + exp(logstd) * noise`` (differentiable w.r.t.
    both; noise from PyTorch's global generator), or the mean when ``deterministic``; a given
    ``(batch, act_dim)`` action comes back unchanged. ``logprob`` and ``entropy`` are ``(batch,)``
    float32, summed over the action dimensions, differentiable. Compared with
    ``torch.distributions.Normal`` on fixed cases (log-stds from -5 to 1.5, actions 40 sigma away, one
    action dimension, batch 1); 4,000 seeded draws must have the right means and standard deviations.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def call(mean, logstd, **kwargs):
        torch.manual_seed(0)
        out = gaussian_sample_and_score(mean, logstd, **kwargs)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise Diagnosis("gaussian_sample_and_score should return a tuple (action, logprob, entropy)")
        return [expect_tensor(x, n) for x, n in zip(out, ("action", "logprob", "entropy"))]

    def body():
        require_signature(gaussian_sample_and_score, _SIGNATURE, _SCORE_CASES[0][0], _SCORE_CASES[0][1], action=None,
                          deterministic=False)
        for mean, logstd, given in _SCORE_CASES:
            _gaussian_scores(call, mean, logstd, given)
            _gaussian_sampling(call, mean, logstd)
        mean, logstd, given = _SCORE_CASES[0]
        _gaussian_reparameterised(call, mean, logstd)
        _gaussian_reparameterised(call, _SCORE_CASES[1][0], _SCORE_CASES[1][1])
        _gaussian_deterministic(call, mean, logstd, given)
        return ("log-probs and entropies equal Normal(mean, exp(log_std)) summed over dimensions (log-stds -5 to "
                "1.5, actions 40 sigma away, one dimension, batch 1), differentiable; given actions scored, not "
                "resampled; 4,000 draws have the right means and stds; samples reparameterised; deterministic "
                "gives the mean")

    return run_check("gaussian_sample_and_score", body,
                     hint="Normal(mean, logstd.exp()): rsample() only if no action is given, then log_prob and "
                          "entropy summed over the last axis", quiet=quiet)


# --------------------------------------------------------------------------------------------
# Task 2: clip_and_score
# --------------------------------------------------------------------------------------------
# (raw_action, mean, logstd, low, high): a throttle-like [0, 1] dimension next to a [-2, 2] one, raw
# samples inside, below and above each bound; then Pendulum's [-2, 2] with a batch of one.
_CLIP_CASES = [
    (torch.tensor([[0.5, 0.3], [2.7, 1.4], [-2.9, -0.2], [1.9, 0.99], [-0.3, 2.5], [5.0, -3.0]]),
     torch.tensor([[0.2, 0.5], [2.4, 1.0], [-2.5, 0.1], [2.0, 0.8], [0.0, 1.5], [3.0, -1.0]]),
     torch.tensor([[0.3, -0.7]]), np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)),
    (torch.tensor([[2.6]]), torch.tensor([[2.2]]), torch.tensor([[0.0]]),
     np.array([-2.0], np.float32), np.array([2.0], np.float32)),
]


def _clip_env_action(env_action, raw, mean, low, high) -> None:
    """The env's action: ``raw`` clipped to the Box, per dimension, float32."""
    lo, hi = torch.as_tensor(low), torch.as_tensor(high)
    want = torch.max(torch.min(raw, hi), lo)
    if tuple(env_action.shape) != tuple(raw.shape):
        raise Diagnosis(f"the env's action should have the raw sample's shape {tuple(raw.shape)}, got "
                        f"{tuple(env_action.shape)}")
    _float32(env_action, "the env's action", "the Box's dtype")
    variants = {
        "the env's action is not clipped: a sample beyond the Box's bounds would reach the environment": raw,
        "clipped to [-1, 1] rather than to the space's bounds [low, high]": raw.clamp(-1.0, 1.0),
        "every dimension was clipped to the first dimension's bounds: low and high are per-dimension arrays":
            raw.clamp(float(lo[0]), float(hi[0])),
        "clipped to [-high, high]: the bounds need not be symmetric; use low for the lower one":
            torch.max(torch.min(raw, hi), -hi),
        "you clipped the mean, not the sample: the env gets the sampled action, clipped":
            torch.max(torch.min(mean, hi), lo),
        "you squashed the sample with tanh: this task clips it to [low, high] (squashing is the alternative "
        "discussed below, with its own log-prob correction)": torch.tanh(raw),
    }
    _compare(env_action, want, variants, lambda k: (
        f"row {k // raw.shape[1]}, dimension {k % raw.shape[1]}: raw sample {float(raw.flatten()[k]):g}, bounds "
        f"[{float(lo.flatten()[k % raw.shape[1]]):g}, {float(hi.flatten()[k % raw.shape[1]]):g}]: the env should get "
        f"{float(want.flatten()[k]):g}, got {float(env_action.flatten()[k]):g}"))


def check_clip_and_score(clip_and_score, quiet: bool = False):
    """Check ``clip_and_score(raw_action, mean, logstd, low, high) -> (env_action, logprob)``.

    Contract: ``raw_action`` and ``mean`` are ``(batch, act_dim)`` float32, ``logstd`` ``(1, act_dim)``,
    ``low`` and ``high`` the Box's ``(act_dim,)`` float32 NumPy bounds. ``env_action`` (a tensor or an
    array) is ``raw_action`` clipped to ``[low, high]`` per dimension, float32, for the environment;
    ``logprob`` ``(batch,)`` is log N(raw_action; mean, exp(logstd)) summed over dimensions: the log-prob
    of the **raw** sample, which the rollout stores with it. ``raw_action`` is not modified. Verified on
    asymmetric per-dimension bounds with samples inside, below and above each, and a batch of one.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        for raw, mean, logstd, low, high in _CLIP_CASES:
            raw_in, low_in, high_in = raw.clone(), low.copy(), high.copy()
            out = clip_and_score(raw_in, mean.clone(), logstd.clone(), low_in, high_in)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise Diagnosis("clip_and_score should return a tuple (env_action, logprob)")
            raise_if_modified([(raw_in, raw, "raw_action")], "you clipped {name} in place (clamp_, or out=): the "
                              "rollout stores the raw sample, and now its copy is clipped too; clip a new tensor "
                              "(torch.clamp, not clamp_)")
            raise_if_modified([(low_in, low, "low"), (high_in, high, "high")], "{name} was modified")
            env_action = torch.as_tensor(np.asarray(out[0].detach() if torch.is_tensor(out[0]) else out[0]))
            _clip_env_action(env_action, raw, mean, low, high)
            logprob = expect_tensor(out[1], "logprob").detach()
            _rows(logprob, "logprob", raw.shape[0], raw.shape[1], _normal(mean, logstd).log_prob(raw.double()))
            _float32(logprob, "logprob")
            want = _normal(mean, logstd).log_prob(raw.double()).sum(-1)
            clipped = env_action.double()
            variants = {"the log-prob is that of the clipped action: store the log-prob of the raw sample, the "
                        "action the policy drew and the buffer keeps; the update re-scores that raw sample, so only "
                        "then is the first ratio exactly 1": _normal(mean, logstd).log_prob(clipped).sum(-1),
                        **_logprob_variants(mean, logstd, raw)}
            _compare(logprob, want, variants, lambda i: (
                f"logprob is not log N(raw sample; mean, exp(log_std)): row {i}, raw {fmt(raw[i])}, mean "
                f"{fmt(mean[i])}: expected {float(want[i]):.4f}, got {float(logprob[i]):.4f}"))
        return ("the env gets the raw sample clipped to [low, high] per dimension (asymmetric bounds, samples inside, "
                "below and above, batch 1), float32; the log-prob is the raw sample's, summed; raw_action unchanged")

    return run_check("clip_and_score", body, hint="torch.clamp(raw_action, low, high) for the env (bounds as "
                     "tensors); score raw_action, not the clipped one", quiet=quiet)


# --------------------------------------------------------------------------------------------
# Task 3: RunningObsNormalizer
# --------------------------------------------------------------------------------------------
_OBS_DIM = 3
_SIZES = (64, 7, 1, 10_000)


def _obs_batches() -> list[torch.Tensor]:
    """Batches whose mean moves (so that the mean-difference term matters); dimension 1 is always 0, so
    that its variance ends near 1e-8, the size of epsilon."""
    rng = np.random.default_rng(0)
    return [torch.as_tensor(rng.normal([5.0 + 3 * i, 0.0, -1.0 + 0.5 * i], [2.0, 0.0, 0.1], size=(n, _OBS_DIM)),
                            dtype=torch.float32) for i, n in enumerate(_SIZES)]


def _merge(state, x: np.ndarray, how: str = "chan"):
    """One update of (mean, var, count) by ``x``: Chan et al.'s merge ("chan"), or a common mistake."""
    mean, var, count = state
    n = x.shape[0]
    with warnings.catch_warnings():  # ddof=1 on a batch of one row: NaN, as the mistake gives
        warnings.simplefilter("ignore", RuntimeWarning)
        batch_mean, batch_var = x.mean(0), x.var(0, ddof=1 if how == "unbiased" else 0)
    if how == "replace":
        return batch_mean, batch_var, count + n
    if how == "equal":
        return (mean + batch_mean) / 2, (var + batch_var) / 2, count + n
    total = count + n
    delta = batch_mean - mean
    new_mean = mean + delta * n / total
    gap = batch_mean - new_mean if how == "new_mean" else delta
    spread = 0.0 if how == "no_delta" else gap ** 2 * count * n / total
    return new_mean, (var * count + batch_var * n + spread) / total, total


_MERGE_MISTAKES = {
    "no_delta": "the variances are merged without the mean-difference term: M2 = var * count + batch_var * n "
                "+ delta^2 * count * n / (count + n), where delta = batch_mean - mean; without it the variance "
                "misses how far the batches' means are apart",
    "new_mean": "delta in the variance's mean-difference term was taken after self.mean was updated: compute "
                "delta = batch_mean - mean once, before changing the mean",
    "unbiased": "the batch variance is unbiased (divides by n - 1: torch's default var): Gymnasium's RunningMeanStd "
                "uses the population variance (np.var, or torch.var(..., unbiased=False))",
    "equal": "the statistics are averaged with equal weights ((old + batch) / 2): weight them by their counts",
    "replace": "the statistics are replaced by the last batch's instead of merged with the running ones",
}


def _stats(norm) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        values = [np.array(torch.as_tensor(getattr(norm, k)).detach().double().cpu().numpy()) for k in
                  ("mean", "var", "count")]
    except AttributeError:
        raise Diagnosis("keep the statistics in self.mean, self.var and self.count, as the given __init__ "
                        "does (the check reads them)") from None
    return values[0], values[1], float(values[2])


def _same_stats(a, b) -> bool:
    return abs(a[2] - b[2]) <= 1e-6 * max(1.0, abs(b[2])) and all(
        a[i].shape == b[i].shape and np.allclose(a[i], b[i], rtol=1e-5, atol=1e-12, equal_nan=True) for i in (0, 1))


def _trajectory(history, how: str = "chan") -> list:
    """The statistics after each batch of ``history``, from Gymnasium's starting point (0, 1, 1e-4)."""
    states, state = [], (np.zeros(_OBS_DIM), np.ones(_OBS_DIM), 1e-4)
    for x in history:
        state = _merge(state, x, how)
        states.append(state)
    return states


def _compare_stats(got: list, want: list, history: list) -> None:
    """The learner's statistics after every update equal the reference's; else the merge mistake that
    reproduces all of them, or the first difference."""
    k = next((j for j, (a, b) in enumerate(zip(got, want)) if not _same_stats(a, b)), None)
    if k is None:
        return
    for i, name in ((0, "mean"), (1, "var")):
        if got[k][i].shape != want[k][i].shape:
            raise Diagnosis(f"{name} should have shape (obs_dim,) = {want[k][i].shape}, got {got[k][i].shape}: "
                            "reduce over the batch axis only (dim 0), without keepdim")
    if abs(got[k][2] - want[k][2]) > 1e-6 * max(1.0, want[k][2]):
        raise Diagnosis(f"after {k + 1} update(s) count is {got[k][2]:g}, expected {want[k][2]:g}: add each "
                        "batch's number of rows (n = batch.shape[0]) to count")
    for how, message in _MERGE_MISTAKES.items():
        if all(_same_stats(a, b) for a, b in zip(got, _trajectory(history, how))):
            raise Diagnosis(message)
    i = 0 if not np.allclose(got[k][0], want[k][0], rtol=1e-5, atol=1e-12) else 1
    d = int(np.nanargmax(np.abs(got[k][i] - want[k][i]))) if np.isfinite(got[k][i]).any() else 0
    raise Diagnosis(f"after update {k + 1} (a batch of {history[k].shape[0]} rows) {('mean', 'var')[i]}[{d}] is "
                    f"{float(got[k][i][d]):.6g}, expected {float(want[k][i][d]):.6g}")


def _normalized(out, obs: torch.Tensor, what: str) -> torch.Tensor:
    if not (torch.is_tensor(out) or isinstance(out, np.ndarray)):
        raise Diagnosis(f"{what} returned {type(out).__name__}: return the normalised observations, a float32 tensor "
                        f"of the observations' shape {tuple(obs.shape)}")
    out = torch.as_tensor(np.asarray(out.detach() if torch.is_tensor(out) else out))
    if tuple(out.shape) != tuple(obs.shape):
        raise Diagnosis(f"{what} should return the observations' shape {tuple(obs.shape)}, got {tuple(out.shape)}")
    _float32(out, f"{what}'s output")
    return out


def _check_normalize(norm, stats) -> None:
    """normalize(obs) = clip((obs - mean) / sqrt(var + eps), +-clip), float32, with no update."""
    mean, var, _ = (torch.as_tensor(s, dtype=torch.float64) for s in stats)
    obs = torch.tensor([[10.0, 1e-4, 0.0], [200.0, -5e-5, 0.5], [-150.0, 0.0, 2.0], [14.0, 2e-4, -0.4]])
    before = obs.clone()
    out = _normalized(norm.normalize(obs), obs, "normalize")
    raise_if_modified([(obs, before, "its input")], "normalize modified {name} in place (obs -= mean?): the "
                      "caller's observations change; compute a new tensor")
    if not all(np.array_equal(a, b) for a, b in zip(_stats(norm), stats)):
        raise Diagnosis("normalize() changed the statistics: it must only apply them; updating is update()'s job")
    reference = ObsNormalizer(_OBS_DIM)
    reference.set_statistics(mean, var, 1.0)
    want, x = reference(obs), obs.double() - mean
    variants = {
        "no epsilon under the square root: divide by sqrt(var + epsilon) (epsilon = 1e-8), or a dimension that "
        "never varies divides by ~0": (x / var.sqrt()).clamp(-OBS_CLIP, OBS_CLIP),
        "epsilon is added outside the square root: divide by sqrt(var + epsilon), as Gymnasium does":
            (x / (var.sqrt() + OBS_EPSILON)).clamp(-OBS_CLIP, OBS_CLIP),
        f"the normalised observations are not clipped to [-{OBS_CLIP:g}, {OBS_CLIP:g}]: one outlier would "
        "otherwise reach the network at hundreds of standard deviations": x / (var + OBS_EPSILON).sqrt(),
        "you divided by the variance instead of the standard deviation sqrt(var + epsilon)":
            (x / (var + OBS_EPSILON)).clamp(-OBS_CLIP, OBS_CLIP),
        "the observations are scaled but not centred: subtract the mean first":
            (obs.double() / (var + OBS_EPSILON).sqrt()).clamp(-OBS_CLIP, OBS_CLIP),
    }
    _compare(out, want, variants, lambda k: (
        f"normalize: observation {k // _OBS_DIM}, dimension {k % _OBS_DIM} (value {float(obs.flatten()[k]):g}, mean "
        f"{float(mean[k % _OBS_DIM]):.4g}, var {float(var[k % _OBS_DIM]):.4g}): expected "
        f"{float(want.flatten()[k]):.5g}, got {float(out.flatten()[k]):.5g}"), tol=1e-5)


def _check_call_modes(norm) -> None:
    """__call__: update then normalise while update_running_mean is True; only normalise while it is False."""
    obs = torch.tensor([[30.0, 0.0, 1.0], [26.0, 1e-4, 0.8], [35.0, 0.0, 1.4]])
    before = _stats(norm)
    norm.update_running_mean = False
    frozen = _normalized(norm(obs.clone()), obs, "__call__")
    if not all(np.array_equal(a, b) for a, b in zip(_stats(norm), before)):
        raise Diagnosis("the statistics changed while update_running_mean is False (evaluation): frozen, __call__ "
                        "must only normalise, or evaluation shifts the statistics the agent was trained with")
    if not close(frozen, _normalized(norm.normalize(obs.clone()), obs, "normalize"), atol=1e-6):
        raise Diagnosis("with update_running_mean False, __call__(obs) should return normalize(obs)")
    norm.update_running_mean = True
    out = _normalized(norm(obs.clone()), obs, "__call__")
    got = _stats(norm)
    if all(np.array_equal(a, b) for a, b in zip(got, before)):
        raise Diagnosis("__call__ does not update the statistics while update_running_mean is True (training): "
                        "call self.update(obs) first")
    if not _same_stats(got, _merge(before, obs.double().numpy())):
        raise Diagnosis("while update_running_mean is True, __call__(obs) should update the statistics once, "
                        "as update(obs) does, then normalise")
    stale = ObsNormalizer(_OBS_DIM)
    stale.set_statistics(*before)
    if close(out, stale(obs), atol=1e-5) and not close(out, norm.normalize(obs.clone()), atol=1e-5):
        raise Diagnosis("__call__ normalised with the statistics from before this batch: update first, then "
                        "normalise (as Gymnasium's NormalizeObservation does)")
    if not close(out, _normalized(norm.normalize(obs.clone()), obs, "normalize"), atol=1e-5):
        raise Diagnosis("with update_running_mean True, __call__(obs) should return normalize(obs) after the update")


def check_running_obs_normalizer(RunningObsNormalizer, quiet: bool = False):
    """Check a class ``RunningObsNormalizer(obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON)``.

    Contract: statistics ``mean``, ``var`` (``(obs_dim,)``, float64 tensors or arrays) and ``count``
    starting at 0, 1 and 1e-4; ``update(batch)`` merges a ``(n, obs_dim)`` batch's mean and population
    variance into them as Gymnasium's ``RunningMeanStd`` does (Chan et al.'s parallel algorithm);
    ``normalize(obs)`` returns ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)`` as float32
    (:class:`ppo_course.networks.ObsNormalizer`'s formula), without updating; ``__call__(obs)`` updates
    then normalises while ``update_running_mean`` is True, and only normalises while it is False.
    Verified with batches of 64, 7, 1 and 10,000 rows whose mean moves, a dimension that never varies
    (variance near epsilon), outliers beyond the clip, and both modes of ``__call__``.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        norm = RunningObsNormalizer(_OBS_DIM)
        reference, history, got, want = RunningMeanStd(shape=(_OBS_DIM,)), [], [], []
        for batch in _obs_batches():
            norm.update(batch.clone())
            history.append(batch.double().numpy())
            reference.update(history[-1])
            got.append(_stats(norm))
            want.append((reference.mean.copy(), reference.var.copy(), float(reference.count)))
        _compare_stats(got, want, history)
        _check_normalize(norm, got[-1])
        _check_call_modes(norm)
        return ("mean, var and count equal Gymnasium's RunningMeanStd after batches of 64, 7, 1 and 10,000 rows; "
                "normalize = clip((obs - mean) / sqrt(var + 1e-8), +-10) in float32 (a constant dimension, outliers) "
                "without updating; __call__ updates then normalises, and only normalises when frozen")

    return run_check("RunningObsNormalizer", body, hint="merge the batch's mean and variance with the running ones, "
                     "weighted by their counts, plus the mean-difference term", quiet=quiet)
