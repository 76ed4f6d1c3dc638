"""Checks for ex04 (the PPO loss): clipped surrogate, clipped value loss, total loss, approx KL.

Every check runs the learner's function next to :mod:`ppo_course.losses` on hand-made cases
that cover each region of the clipped objective (ratio below, inside and above
``[1 - eps, 1 + eps]``, for positive and negative advantages), a batch of one sample and the
ratio exactly 1. When the numbers differ, the learner's per-sample output is compared with
the output of the common mistakes (wrong sign, max instead of min, clipping the advantage,
...), so the diagnosis names the mistake rather than just "values differ".
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .. import losses as ref
from ._core import CheckResult, Diagnosis, close, run_check

__all__ = ["check_clipped_surrogate", "check_value_loss", "check_ppo_loss", "check_approx_kl"]

CLIP = 0.2
# (ratio, advantage) pairs: every region of the clipped objective, both advantage signs.
_SURROGATE_CASES = [(r, a) for a in (1.5, -0.8) for r in (0.5, 0.75, 0.9, 1.0, 1.1, 1.3, 2.0)]


def _scalar(out, what: str) -> torch.Tensor:
    """The learner's output as a 0-d tensor, or a diagnosis saying what it was instead."""
    if not isinstance(out, torch.Tensor):
        raise Diagnosis(f"{what} should return a 0-d torch tensor (so that .backward() works), "
                        f"got {type(out).__name__}")
    if out.dim() != 0:
        raise Diagnosis(f"{what} should return a 0-d tensor (the mean over the batch), got shape "
                        f"{tuple(out.shape)} — did you forget .mean()?")
    return out


#: The losses are compared in float64, within 1e-5, and a non-finite value never counts as close.
_close = partial(close, atol=1e-5, rtol=1e-5, dtype=torch.float64, finite=True)


def _match(got: torch.Tensor, variants: dict[str, torch.Tensor]) -> str | None:
    """The message of the first variant whose values equal ``got``, else None."""
    for message, values in variants.items():
        if _close(got, values):
            return message
    return None


def _per_sample(fn: Callable, *columns: torch.Tensor, extra=()) -> torch.Tensor:
    """Call ``fn`` on each sample alone (a batch of one) and stack the 0-d results."""
    outs = []
    for i in range(columns[0].shape[0]):
        out = fn(*(c[i:i + 1] for c in columns), *extra)
        outs.append(_scalar(out, fn.__name__ if hasattr(fn, "__name__") else "your function").detach())
    return torch.stack(outs).float()


def _compare_per_sample(got: torch.Tensor, expected: torch.Tensor, variants: Callable[[], dict[str, torch.Tensor]],
                        describe: Callable[[int], str]) -> None:
    """Per-sample values: the matching mistake of ``variants()``, else ``describe(worst sample)``."""
    if _close(got, expected):
        return
    found = _match(got, variants())
    if found:
        raise Diagnosis(found)
    raise Diagnosis(describe(int((got - expected).abs().argmax())))


# --------------------------------------------------------------------------------------
# Task 1: the clipped surrogate
# --------------------------------------------------------------------------------------
def _surrogate_inputs():
    ratios = torch.tensor([r for r, _ in _SURROGATE_CASES], dtype=torch.float32)
    advantages = torch.tensor([a for _, a in _SURROGATE_CASES], dtype=torch.float32)
    old = torch.linspace(-2.0, -0.3, len(_SURROGATE_CASES))
    new = old + torch.log(ratios)
    return new, old, advantages


def _surrogate_variants(new, old, adv, eps):
    ratio = torch.exp(new - old)
    lo, hi = 1 - eps, 1 + eps

    def per(r, a, clip=lambda r: torch.clamp(r, lo, hi), op=torch.min, sign=-1.0):
        return sign * op(r * a, clip(r) * a)

    return {
        "the policy loss has the wrong sign: minimising it would make good actions less likely "
        "(return minus the mean of the min)": per(ratio, adv, sign=1.0),
        "you took max instead of min of the two surrogates: the min is what makes the objective a "
        "pessimistic bound (ratio 1.3 with A > 0 must give the clipped value 1.2·A)": per(ratio, adv, op=torch.max),
        "you clipped the advantages instead of the ratio: clamp r_t = exp(new - old) to "
        "[1 - eps, 1 + eps] and multiply by the unclipped advantage": -torch.min(
            ratio * adv, ratio * torch.clamp(adv, lo, hi)),
        "you clipped the advantages instead of the ratio (clamp(A, -eps, eps)): the ratio is what gets "
        "clipped to [1 - eps, 1 + eps]": -torch.min(ratio * adv, ratio * torch.clamp(adv, -eps, eps)),
        "the ratio is computed as new_logprobs / old_logprobs: these are log-probabilities, so the ratio is "
        "exp(new_logprobs - old_logprobs)": per(new / old, adv),
        "the ratio is inverted: use exp(new_logprobs - old_logprobs), not exp(old - new) — the ratio is "
        "pi_new / pi_old": per(torch.exp(old - new), adv),
        "the ratio is missing its exp: new_logprobs - old_logprobs is log r_t; the ratio is its exp":
            per(new - old, adv),
        "the ratio is clamped on one side only (upper bound 1 + eps missing): use torch.clamp(ratio, 1 - eps, "
        "1 + eps)": per(ratio, adv, clip=lambda r: torch.clamp(r, min=lo)),
        "the ratio is clamped on one side only (lower bound 1 - eps missing): use torch.clamp(ratio, 1 - eps, "
        "1 + eps)": per(ratio, adv, clip=lambda r: torch.clamp(r, max=hi)),
        "the ratio is not clipped at all: min(r·A, clip(r, 1 - eps, 1 + eps)·A) needs the clamp":
            -(ratio * adv),
    }


def _surrogate_per_sample(fn, new, old, adv) -> None:
    """Each (ratio, advantage) case alone, as a batch of one."""
    expected_each = torch.stack([ref.clipped_surrogate(new[i:i + 1], old[i:i + 1], adv[i:i + 1], CLIP)
                                 for i in range(len(adv))])
    got_each = _per_sample(fn, new, old, adv, extra=(CLIP,))

    def describe(bad: int) -> str:
        r, a = _SURROGATE_CASES[bad]
        return (f"wrong value for ratio {r:g}, advantage {a:g}, clip_coef {CLIP}: expected "
                f"{expected_each[bad].item():.4f}, got {got_each[bad].item():.4f} "
                "(the loss is -min(r·A, clip(r, 1-eps, 1+eps)·A))")

    _compare_per_sample(got_each, expected_each, lambda: _surrogate_variants(new, old, adv, CLIP), describe)


def _surrogate_batch(fn, new, old, adv) -> None:
    """The whole batch at once: the mean, not the sum."""
    got = _scalar(fn(new, old, adv, CLIP), "clipped_surrogate")
    expected = ref.clipped_surrogate(new, old, adv, CLIP)
    if not _close(got, expected):
        if _close(got, expected * len(adv)):
            raise Diagnosis(f"you summed over the batch instead of taking the mean: {len(adv)} samples "
                            f"give {got.item():.4f}, expected {expected.item():.4f} (the loss scale, and "
                            "so the step size, would grow with the minibatch size)")
        raise Diagnosis(f"each sample alone is right but the batch of {len(adv)} gives {got.item():.4f}, "
                        f"expected the mean {expected.item():.4f}")


def _surrogate_ratio_one(fn) -> None:
    """Ratio exactly 1: the loss is -mean(A), whatever the clip range."""
    same = torch.tensor([-0.7, -1.2, -0.1])
    a1 = torch.tensor([0.5, -2.0, 1.0])
    got1 = _scalar(fn(same.clone(), same.clone(), a1, 0.1), "clipped_surrogate")
    if not _close(got1, -a1.mean()):
        raise Diagnosis(f"with new_logprobs == old_logprobs (ratio exactly 1) the loss must be -mean(A) = "
                        f"{-a1.mean().item():.4f}, got {got1.item():.4f}")


def _surrogate_gradient(fn, new, old, adv) -> int:
    """Zero gradient where clipping is active (the min picks the constant clipped term), non-zero elsewhere.

    Returns:
        How many samples are clipped.
    """
    new_g = new.clone().requires_grad_(True)
    out = _scalar(fn(new_g, old, adv, CLIP), "clipped_surrogate")
    if not out.requires_grad:
        raise Diagnosis("the loss carries no gradient to new_logprobs: did you .detach() it, call "
                        ".item(), or build a new tensor with torch.tensor(...)?")
    (grad,) = torch.autograd.grad(out, new_g)
    new_r = new.clone().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad(ref.clipped_surrogate(new_r, old, adv, CLIP), new_r)
    if not _close(grad, expected_grad):
        clipped = expected_grad == 0
        leak = (grad != 0) & clipped
        if leak.any():
            i = int(leak.nonzero()[0])
            r, a = _SURROGATE_CASES[i]
            raise Diagnosis(f"the value is right but gradient flows through a clipped sample (ratio {r:g}, "
                            f"advantage {a:g}): there the min must pick the clipped, constant term")
        raise Diagnosis("the value is right but the gradient with respect to new_logprobs is not "
                        "(is part of the ratio detached?)")
    return int((expected_grad == 0).sum())


def check_clipped_surrogate(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_coef) -> 0-d tensor``.

    Verifies PPO eq. 7, sign-flipped and averaged: ``-mean(min(r A, clip(r, 1-eps, 1+eps) A))``
    with ``r = exp(new - old)``, on ratios below, inside and above the clip range for both
    advantage signs, the ratio exactly 1, a batch of one sample, the mean (not the sum) over
    the batch, and the gradient (zero exactly where the clipped term is the smaller one).

    Args:
        fn: the learner's function; takes three ``(batch,)`` float32 tensors and a float.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    def body() -> str:
        new, old, adv = _surrogate_inputs()
        _surrogate_per_sample(fn, new, old, adv)
        _surrogate_batch(fn, new, old, adv)
        _surrogate_ratio_one(fn)
        n_clipped = _surrogate_gradient(fn, new, old, adv)
        return (f"{len(adv)} ratio/advantage cases on both sides of the clip range, ratio exactly 1, batch of 1, "
                f"mean over the batch, zero gradient on the {n_clipped} clipped samples")

    return run_check("clipped_surrogate", body, hint="ratio = exp(new - old); loss = -mean(min(r*A, clip(r)*A))",
                     quiet=quiet)


# --------------------------------------------------------------------------------------
# Task 2: the clipped value loss
# --------------------------------------------------------------------------------------
def _value_inputs():
    # old V = 0 for a clear picture; the new value moved by less or more than eps, towards or away from R
    deltas = [-0.5, -0.1, 0.05, 0.15, 0.6, 0.3, -0.3, 1.0]
    returns = [1.0, -1.0, 0.5, -0.4, -0.8, 0.2, 0.6, 2.0]
    old = torch.tensor([0.1, -0.2, 0.3, 0.0, -0.1, 0.2, 0.05, 0.5])
    new = old + torch.tensor(deltas)
    return new, old, torch.tensor(returns)


def _value_variants(new, old, ret, eps):
    unclipped = (new - ret) ** 2
    clipped = (old + torch.clamp(new - old, -eps, eps) - ret) ** 2
    around_returns = (ret + torch.clamp(new - ret, -eps, eps) - ret) ** 2
    return {
        "you took min instead of max of the clipped and unclipped squared errors: the max keeps the loss "
        "pessimistic, like the policy's min": 0.5 * torch.min(unclipped, clipped),
        "the value is clipped around the returns instead of around the old values: V_clip = old_values + "
        "clamp(new_values - old_values, -eps, eps)": 0.5 * torch.max(unclipped, around_returns),
        "the 0.5 factor is missing: the value loss is 0.5 * mean(max(...)) (CleanRL's convention; vf_coef "
        "assumes it)": torch.max(unclipped, clipped),
        "the value is not clipped: 0.5 * mean(max((V - R)^2, (V_clip - R)^2)) with V_clip = old_values + "
        "clamp(new_values - old_values, -eps, eps)": 0.5 * unclipped,
        "old_values and returns are swapped: the error is measured against returns, the clipping is around "
        "old_values": 0.5 * torch.max((new - old) ** 2, (ret + torch.clamp(new - ret, -eps, eps) - old) ** 2),
        "the error is not squared (use (V - R) ** 2)": 0.5 * torch.max((new - ret).abs(),
                                                                       (old + torch.clamp(new - old, -eps, eps)
                                                                        - ret).abs()),
    }


def _value_per_sample(fn, new, old, ret) -> None:
    """Each case alone, as a batch of one."""
    expected_each = torch.stack([ref.value_loss(new[i:i + 1], old[i:i + 1], ret[i:i + 1], CLIP)
                                 for i in range(len(new))])
    got_each = _per_sample(fn, new, old, ret, extra=(CLIP,))

    def describe(i: int) -> str:
        return (f"wrong value for new V {new[i].item():.2f}, old V {old[i].item():.2f}, return "
                f"{ret[i].item():.2f}, clip_coef {CLIP}: expected {expected_each[i].item():.4f}, got "
                f"{got_each[i].item():.4f}")

    _compare_per_sample(got_each, expected_each, lambda: _value_variants(new, old, ret, CLIP), describe)


def _value_batch(got_full, new, old, ret) -> None:
    """The whole batch at once: the mean over (batch,) tensors, not a (batch, batch) broadcast or a sum."""
    expected = ref.value_loss(new, old, ret, CLIP)
    if not _close(got_full, expected):
        broadcast = 0.5 * torch.max((new[:, None] - ret) ** 2,
                                    (old[:, None] + torch.clamp(new[:, None] - old[:, None], -CLIP, CLIP)
                                     - ret) ** 2).mean()
        if _close(got_full, broadcast):
            raise Diagnosis("a (batch, 1) tensor meets a (batch,) one and broadcasts to (batch, batch): every "
                            "value is compared with every return. Keep all three (batch,) (squeeze(-1) the "
                            "critic's output)")
        if _close(got_full, expected * len(new)):
            raise Diagnosis("you summed over the batch instead of taking the mean")
        raise Diagnosis(f"each sample alone is right but the batch of {len(new)} gives {got_full.item():.4f}, "
                        f"expected the mean {expected.item():.4f}")


def _value_unclipped(fn, new, old, ret) -> None:
    """``clip_coef=None`` (also the default): the plain 0.5 * mean((V - R)^2); ``old_values`` unused, may be None."""
    expected = ref.value_loss(new, None, ret)
    for args, call in (((new, old, ret, None), "value_loss(new_values, old_values, returns, None)"),
                       ((new, None, ret), "value_loss(new_values, None, returns)")):
        try:
            got = _scalar(fn(*args), "value_loss")
        except TypeError as exc:
            raise Diagnosis(f"{call} raised TypeError ({exc}): clip_coef defaults to None, which means no "
                            "clipping: return 0.5 * mean((new_values - returns) ** 2) and leave old_values "
                            "alone (it may be None)") from None
        if not _close(got, expected):
            raise Diagnosis(f"{call} gives {got.item():.4f}, expected the unclipped loss "
                            f"0.5 * mean((new_values - returns) ** 2) = {expected.item():.4f}: clip_coef=None "
                            "means no clipping")


def check_value_loss(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``value_loss(new_values, old_values, returns, clip_coef=None) -> 0-d tensor``.

    Verifies CleanRL's clipped value loss ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))`` with
    ``V_clip = old + clamp(V - old, -eps, eps)`` against :func:`ppo_course.losses.value_loss` on
    values that moved by less and by more than eps, towards and away from the return; a batch of
    one; the mean over the batch; that the result is a scalar and not a ``(batch, batch)``
    broadcast; and, with ``clip_coef=None`` (the default), the plain ``0.5 * mean((V - R)^2)``
    with ``old_values`` unused (None).

    Args:
        fn: the learner's function; three ``(batch,)`` float32 tensors (note the order, that of
            ``clipped_surrogate`` and ``ppo_loss``: new values, old values, returns) and a float
            or None.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    def body() -> str:
        new, old, ret = _value_inputs()
        got_full = fn(new, old, ret, CLIP)
        if isinstance(got_full, torch.Tensor) and got_full.dim() == 2:
            raise Diagnosis(f"the result has shape {tuple(got_full.shape)}: a (batch, 1) tensor minus a (batch,) "
                            "tensor broadcasts to (batch, batch) — keep all three (batch,) (squeeze the critic's "
                            "output)")
        got_full = _scalar(got_full, "value_loss")
        _value_per_sample(fn, new, old, ret)
        _value_batch(got_full, new, old, ret)
        # gradient flows to new_values only
        new_g = new.clone().requires_grad_(True)
        out = _scalar(fn(new_g, old, ret, CLIP), "value_loss")
        if not out.requires_grad:
            raise Diagnosis("the value loss carries no gradient to new_values (detached, .item() or torch.tensor?)")
        _value_unclipped(fn, new, old, ret)
        return (f"{len(new)} cases (value moved less/more than eps, towards/away from the return), batch of 1, "
                "mean over the batch, gradient reaches new_values, clip_coef=None gives the unclipped loss")

    return run_check("value_loss", body,
                     hint="V_clip = old + clamp(new - old, -eps, eps); 0.5 * mean(max((new-R)^2, (V_clip-R)^2))",
                     quiet=quiet)


# --------------------------------------------------------------------------------------
# Task 3: the total loss
# --------------------------------------------------------------------------------------
def _loss_inputs(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    old_lp = -torch.rand(n, generator=g) * 2 - 0.1
    new_lp = old_lp + (torch.rand(n, generator=g) - 0.5) * 0.8  # ratios ~0.67..1.49: some clipped
    adv = torch.randn(n, generator=g) * 3 + 1.5  # far from mean 0 / std 1: normalisation matters
    old_v = torch.randn(n, generator=g)
    new_v = old_v + (torch.rand(n, generator=g) - 0.5)
    ret = adv + old_v  # consistent value targets, as GAE makes them
    ent = torch.rand(n, generator=g) * 0.5 + 0.8
    return new_lp, old_lp, adv, new_v, old_v, ret, ent


def _reference_total(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, ent_coef, norm_adv=True):
    return ref.ppo_loss(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip_coef=clip, vf_coef=vf,
                        ent_coef=ent_coef, norm_adv=norm_adv).loss


def _loss_variants(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2):
    norm = ref.normalize_advantages(adv)
    pg = ref.clipped_surrogate(new_lp, old_lp, norm, clip)
    v = ref.value_loss(new_v, old_v, ret, clip)
    s = ent.mean()
    return {
        "the entropy bonus has the wrong sign: minimising this loss would make the policy less random — "
        "more deterministic — instead of rewarding exploration (loss = policy - ent_coef * entropy + "
        "vf_coef * value)": pg + c2 * s + vf * v,
        "the advantages are not normalised: normalise them within the minibatch, (A - mean) / (std + 1e-8), "
        "before the clipped surrogate": _reference_total(new_lp, old_lp, adv, new_v, old_v, ret, ent, clip, vf, c2,
                                                         norm_adv=False),
        "the coefficients are swapped: vf_coef multiplies the value loss and ent_coef the entropy":
            pg - vf * s + c2 * v,
        "the value loss has the wrong sign: the critic's error must be added (loss = policy - ent_coef * entropy "
        "+ vf_coef * value)": pg - c2 * s - vf * v,
        "value targets are not detached: your value target moves with new_values (returns recomputed as "
        "advantages + new_values?) — use the returns argument, computed from the rollout's values, as a "
        "constant": pg - c2 * s + vf * ref.value_loss(new_v, old_v, adv + new_v, clip),
        "the entropy bonus is missing: subtract ent_coef * mean(entropy)": pg + vf * v,
        "the value loss is missing: add vf_coef * value_loss(...)": pg - c2 * s,
        "the advantages are normalised without centring: subtract the mean, then divide by the std":
            ref.clipped_surrogate(new_lp, old_lp, adv / (adv.std() + 1e-8), clip) - c2 * s + vf * v,
        "value targets are not detached: your value target moves with new_values (returns recomputed as "
        "normalised advantages + new_values?) — use the returns argument as a constant":
            pg - c2 * s + vf * ref.value_loss(new_v, old_v, norm + new_v, clip),
    }


def _total_value(fn, inputs, clip, vf, c2) -> tuple[torch.Tensor, torch.Tensor]:
    """The total loss on the batch; returns the learner's value and the reference's with the biased std."""
    got = _scalar(fn(*inputs, clip, vf, c2), "ppo_loss")
    expected = _reference_total(*inputs, clip, vf, c2)
    # torch.std(unbiased=False) in the normalisation is as good (the scale differs by sqrt(n/(n-1)))
    biased = inputs[2].std(unbiased=False)
    alt_adv = (inputs[2] - inputs[2].mean()) / (biased + 1e-8)
    alt = _reference_total(inputs[0], inputs[1], alt_adv, *inputs[3:], clip, vf, c2, norm_adv=False)
    if not (_close(got, expected) or _close(got, alt)):
        found = _match(got.detach(), _loss_variants(*inputs, clip, vf, c2))
        if found:
            raise Diagnosis(found)
        raise Diagnosis(f"the total loss is {got.item():.4f}, expected {expected.item():.4f} on a batch of "
                        f"{len(inputs[0])} (clip_coef {clip}, vf_coef {vf}, ent_coef {c2}); check each term: "
                        "clipped_surrogate(normalised A) - ent_coef * mean(entropy) + vf_coef * value_loss")
    return got, alt


def _total_gradients(fn, inputs, clip, vf, c2, got, alt) -> None:
    """Gradients into new_logprobs, new_values and entropy, as the reference's."""
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    out = _scalar(fn(*leaves, clip, vf, c2), "ppo_loss")
    if not out.requires_grad:
        raise Diagnosis("the loss carries no gradient: did you .detach() it or call .item()?")
    got_grads = torch.autograd.grad(out, leaves, allow_unused=True)
    ref_leaves = [t.clone().requires_grad_(True) for t in inputs]
    ref_grads = torch.autograd.grad(_reference_total(*ref_leaves, clip, vf, c2), ref_leaves, allow_unused=True)
    names = ["new_logprobs", "old_logprobs", "advantages", "new_values", "old_values", "returns", "entropy"]
    for name, g, r in zip(names, got_grads, ref_grads):
        g = torch.zeros_like(inputs[0]) if g is None else g
        r = torch.zeros_like(inputs[0]) if r is None else r
        if not _close(g, r, atol=1e-4, rtol=1e-4) and not _close(got, alt):
            raise Diagnosis(f"the value is right but the gradient with respect to {name} is not "
                            f"(largest difference {(g - r).abs().max().item():.3g}): is something detached "
                            "that should not be, or a target that should be constant carrying gradient?")


def _total_single_sample(fn, inputs, clip, vf, c2) -> None:
    """A minibatch of one sample: std is undefined, the normalised advantage is 0."""
    one = [t[:1] for t in inputs]
    got1 = _scalar(fn(*one, clip, vf, c2), "ppo_loss")
    expected1 = _reference_total(*one, clip, vf, c2)
    if not torch.isfinite(got1):
        raise Diagnosis("a minibatch of one sample gives a non-finite loss: its std is undefined (NaN); "
                        "for one sample return the centred advantage, A - mean(A) = 0")
    if not _close(got1, expected1):
        raise Diagnosis(f"a minibatch of one sample gives {got1.item():.4f}, expected {expected1.item():.4f}: "
                        "one sample normalises to A - mean(A) = 0")


def check_ppo_loss(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
    clip_coef, vf_coef, ent_coef) -> 0-d tensor``.

    Verifies the sign-flipped PPO eq. 9 with per-minibatch advantage normalisation,
    ``policy - ent_coef * mean(entropy) + vf_coef * value`` (clipped value loss), against
    :func:`ppo_course.losses.ppo_loss` on a random batch with advantages far from mean 0 / std 1,
    a batch of one sample (normalised advantage 0, not NaN), and the gradients with respect to
    ``new_logprobs``, ``new_values`` and ``entropy`` (the targets must stay constants).

    Args:
        fn: the learner's function; seven ``(batch,)`` float32 tensors then three floats.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    clip, vf, c2 = 0.2, 0.5, 0.05

    def body() -> str:
        inputs = _loss_inputs()
        got, alt = _total_value(fn, inputs, clip, vf, c2)
        _total_gradients(fn, inputs, clip, vf, c2, got, alt)
        _total_single_sample(fn, inputs, clip, vf, c2)
        return (f"total loss on a batch of {len(inputs[0])} with per-minibatch advantage normalisation, signs and "
                "coefficients of all three terms, gradients into new log-probs/values/entropy only, batch of 1")

    return run_check("ppo_loss", body,
                     hint="normalise A, then clipped_surrogate - ent_coef * entropy.mean() + vf_coef * value_loss",
                     quiet=quiet)


# --------------------------------------------------------------------------------------
# Task 4: approx KL
# --------------------------------------------------------------------------------------
def check_approx_kl(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``approx_kl(new_logprobs, old_logprobs) -> 0-d tensor``: mean((r - 1) - log r), r = exp(new - old).

    Verifies the low-variance "k3" estimator against :func:`ppo_course.losses.approx_kl` on a
    random batch, that it is 0 when nothing changed, and diagnoses the naive estimator
    ``mean(old - new)`` and an inverted ratio.

    Args:
        fn: the learner's function; two ``(batch,)`` float32 tensors.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    def body() -> str:
        g = torch.Generator().manual_seed(1)
        old = -torch.rand(16, generator=g) * 2 - 0.1
        new = old + torch.randn(16, generator=g) * 0.3
        got = _scalar(fn(new, old), "approx_kl")
        expected = ref.approx_kl(new, old)
        if not _close(got, expected):
            logratio = new - old
            variants = {
                "that is the naive estimator mean(old - new) = mean(-log r): unbiased but noisy, and it can go "
                "negative; use mean((r - 1) - log r), which is never negative per sample": (-logratio).mean(),
                "that is the naive estimator with the wrong sign, mean(new - old); use mean((r - 1) - log r) "
                "with r = exp(new - old)": logratio.mean(),
                "the ratio is inverted: r = exp(new_logprobs - old_logprobs), not exp(old - new)":
                    ((torch.exp(-logratio) - 1) + logratio).mean(),
                "the sign is wrong: mean((r - 1) - log r) is never negative": -expected,
            }
            found = _match(got.detach(), variants)
            raise Diagnosis(found or f"expected {expected.item():.5f}, got {got.item():.5f} on 16 samples: "
                                     "mean((r - 1) - log r) with r = exp(new - old)")
        zero = _scalar(fn(old.clone(), old.clone()), "approx_kl")
        if abs(zero.item()) > 1e-7:
            raise Diagnosis(f"with new_logprobs == old_logprobs the KL estimate must be 0, got {zero.item():.3g}")
        one = _scalar(fn(new[:1], old[:1]), "approx_kl")
        if not _close(one, ref.approx_kl(new[:1], old[:1])):
            raise Diagnosis("a batch of one sample gives a wrong value")
        return "k3 estimator on 16 samples, 0 when the policy did not change, batch of 1"

    return run_check("approx_kl", body, hint="r = exp(new - old); mean((r - 1) - log r)", quiet=quiet)
