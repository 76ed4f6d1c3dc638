"""The PPO loss and the diagnostics that tell whether an update was healthy.

References: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (eq. 7 the
clipped surrogate, eq. 9 the combined objective); CleanRL's ``ppo.py`` for value clipping,
the 0.5 factor on the value loss and the approx-KL estimator (Schulman, "Approximating KL
Divergence", 2020). Every function takes ``(batch,)`` float32 tensors and returns a 0-d
tensor unless it says otherwise. Losses are to be *minimised*: the paper maximises
L^CLIP - c1 L^VF + c2 S, so each sign here is flipped.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(A - mean(A)) / (std(A) + eps) over the given (mini)batch.

    A minibatch of one sample has no spread; it is returned centred (all zeros) rather
    than divided by an undefined std.
    """
    if advantages.numel() < 2:
        return advantages - advantages.mean()
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def clipped_surrogate(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                      advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Clipped surrogate policy loss, paper eq. 7 with the sign flipped for minimisation::

        r_t = exp(log pi_new(a_t|s_t) - log pi_old(a_t|s_t))
        L   = -mean( min( r_t * A_t,  clip(r_t, 1 - eps, 1 + eps) * A_t ) )

    Args:
        new_logprobs: ``(batch,)`` log-probs under the policy being updated (carries gradient).
        old_logprobs: ``(batch,)`` log-probs recorded during the rollout (no gradient).
        advantages: ``(batch,)`` advantage estimates (already normalised, if wanted).
        clip_coef: epsilon, the half-width of the trust region around r = 1.
    """
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor | None, returns: torch.Tensor,
               clip_coef: float | None = None) -> torch.Tensor:
    """Critic loss 0.5 * mean((V(s) - R)^2), optionally clipped like the policy.

    The arguments come in the order of :func:`clipped_surrogate` and :func:`ppo_loss`: new, old,
    target. With ``clip_coef`` given, the new value may move at most ``clip_coef`` from the
    rollout's value before its error stops counting (CleanRL's ``ppo.py`` with ``clip_vloss``;
    the PPO paper's code base, baselines ``ppo2``, does the same)::

        V_clip = old_V + clip(V - old_V, -eps, eps)
        L      = 0.5 * mean( max( (V - R)^2, (V_clip - R)^2 ) )

    Args:
        new_values: ``(batch,)`` float32 V(s) from the network being updated (carries gradient).
        old_values: ``(batch,)`` float32 V(s) recorded during the rollout (no gradient); unused,
            and may be None, when ``clip_coef`` is None.
        returns: ``(batch,)`` float32 value targets R_t = A_t + V_old(s_t) (no gradient).
        clip_coef: clipping range for the value; None for the plain, unclipped loss.

    Returns:
        A 0-d float32 tensor.

    Raises:
        ValueError: ``clip_coef`` is given but ``old_values`` is None.
    """
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    if old_values is None:
        raise ValueError("value clipping (clip_coef given) needs old_values, the values recorded in the rollout")
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def entropy_bonus(entropy: torch.Tensor) -> torch.Tensor:
    """Mean policy entropy S[pi](s) in nats (paper eq. 9's S); it is *subtracted* in the loss."""
    return entropy.mean()


def approx_kl(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    """Estimate of KL(pi_old || pi_new) from sampled actions: mean((r - 1) - log r).

    Unbiased and never negative per sample (Schulman 2020, the "k3" estimator), so it has
    far less variance than the naive mean(-log r).
    """
    logratio = new_logprobs - old_logprobs
    return ((torch.exp(logratio) - 1.0) - logratio).mean()


def clip_fraction(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Fraction of samples whose ratio lies outside [1 - eps, 1 + eps]."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    return ((ratio - 1.0).abs() > clip_coef).float().mean()


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor) -> float:
    """1 - Var[y_true - y_pred] / Var[y_true], as a Python float.

    1 means the critic predicts the returns perfectly, 0 that it does no better than a
    constant, below 0 that it does worse. Returns NaN when ``y_true`` has no variance.
    """
    var_y = torch.var(y_true, unbiased=False)
    if var_y.item() == 0:
        return float("nan")
    return float(1.0 - torch.var(y_true - y_pred, unbiased=False) / var_y)


class PPOLoss(NamedTuple):
    """The total loss and its parts for one minibatch (0-d tensors)."""

    loss: torch.Tensor  #: policy_loss - ent_coef * entropy + vf_coef * value_loss
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor  #: detached
    clip_fraction: torch.Tensor  #: detached


def ppo_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
             entropy: torch.Tensor, *, clip_coef: float, vf_coef: float, ent_coef: float,
             clip_vloss: bool = True, norm_adv: bool = True) -> PPOLoss:
    """The total PPO loss of paper eq. 9, sign-flipped for minimisation::

        loss = L_policy - ent_coef * S + vf_coef * L_value

    Args:
        new_logprobs, new_values, entropy: ``(batch,)`` from the network being updated.
        old_logprobs, old_values: ``(batch,)`` recorded during the rollout.
        advantages, returns: ``(batch,)`` from :func:`ppo_course.advantages.compute_gae`.
        clip_coef: epsilon for the ratio (and for the value, if ``clip_vloss``).
        vf_coef: c1. ent_coef: c2.
        clip_vloss: clip the value update (see :func:`value_loss`).
        norm_adv: normalise ``advantages`` within this minibatch first.
    """
    if norm_adv:
        advantages = normalize_advantages(advantages)
    pg_loss = clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_coef)
    v_loss = value_loss(new_values, old_values, returns, clip_coef if clip_vloss else None)
    ent = entropy_bonus(entropy)
    total = pg_loss - ent_coef * ent + vf_coef * v_loss
    with torch.no_grad():
        kl = approx_kl(new_logprobs, old_logprobs)
        clipfrac = clip_fraction(new_logprobs, old_logprobs, clip_coef)
    return PPOLoss(total, pg_loss, v_loss, ent, kl, clipfrac)
