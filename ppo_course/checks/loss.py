"""Checks for ex04 (the PPO loss): clipped surrogate, clipped value loss, total loss, approx KL.

Every check runs the learner's function next to :mod:`ppo_course.losses` on hand-made cases
that cover each region of the clipped objective (ratio below, inside and above
``[1 - eps, 1 + eps]``, for positive and negative advantages), a batch of one sample and the
ratio exactly 1. When the numbers differ, a check first localises the difference (which sample
alone gives a wrong value; for the total loss, which term: the loss is called again with
``vf_coef = ent_coef = 0``, then with one of them 1, and each term's gradient shows the first wrong
sample), then names a mistake only when it reproduces the learner's numbers
(:mod:`ppo_course.checks._hypotheses`): each common mistake (wrong sign, max instead of min, a term
missing, sum instead of mean, arguments swapped, normalisation in the wrong place, a term detached, ...)
is the reference with that one change, run on the same inputs, tried in the order its list documents.
Gradients are compared only for the inputs that should carry them (new log-probs, new values,
entropy); the constant inputs do not require grad, so detaching them, or normalising with ``.item()``
statistics, is as right as the reference.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import losses as ref
from ._core import CheckResult, Diagnosis, run_check
from ._hypotheses import as_double, first_difference, matching_hypothesis, reproduces

__all__ = ["check_clipped_surrogate", "check_value_loss", "check_ppo_loss", "check_approx_kl"]

CLIP = 0.2
# (ratio, advantage) pairs: every region of the clipped objective, both advantage signs.
_SURROGATE_CASES = [(r, a) for a in (1.5, -0.8) for r in (0.5, 0.75, 0.9, 1.0, 1.1, 1.3, 2.0)]
_TOL = 1e-5  # losses are compared in float64 within 1e-5 (absolute and relative)
_GRAD_TOL = 1e-4


def _scalar(out, what: str) -> torch.Tensor:
    """The learner's output as a 0-d tensor, or a diagnosis saying what it was instead."""
    if not isinstance(out, torch.Tensor):
        raise Diagnosis(f"{what} should return a 0-d torch tensor (so that .backward() works), "
                        f"got {type(out).__name__}")
    if out.dim() != 0:
        raise Diagnosis(f"{what} should return a 0-d tensor (the mean over the batch), got shape "
                        f"{tuple(out.shape)} — did you forget .mean()?")
    return out


def _close(got, expected, tol: float = _TOL) -> bool:
    """Same shapes and every element within ``tol`` (absolute and relative) of ``expected``, compared in float64;
    ``got`` and ``expected`` may be sequences. The expected values are finite, so NaN or inf never counts as close."""
    return reproduces(got, expected, atol=tol, rtol=tol)


def _name(hypotheses, got) -> str | None:
    return matching_hypothesis(got, hypotheses, atol=_TOL, rtol=_TOL)


def _per_sample(fn: Callable, *columns: torch.Tensor, extra=()) -> torch.Tensor:
    """Call ``fn`` on each sample alone (a batch of one) and stack the 0-d results."""
    outs = []
    for i in range(columns[0].shape[0]):
        out = fn(*(c[i:i + 1] for c in columns), *extra)
        outs.append(_scalar(out, fn.__name__ if hasattr(fn, "__name__") else "your function").detach())
    return torch.stack([as_double(o) for o in outs])


def _compare_per_sample(got: torch.Tensor, expected: torch.Tensor, variants: Callable[[], dict[str, torch.Tensor]],
                        describe: Callable[[int], str]) -> None:
    """Per-sample values: the mistake of ``variants()`` that reproduces them all, else ``describe(first wrong)``."""
    if _close(got, expected):
        return
    hypotheses = variants()
    found = _name(hypotheses, got)
    if found:
        raise Diagnosis(found)
    d = first_difference(expected, got, atol=_TOL, rtol=_TOL)
    raise Diagnosis(f"{describe(d.index[0])} ({d.count} of {d.size} samples differ; none of the {len(hypotheses)} "
                    "common mistakes tried reproduces your values)")


def _gradient_rows(expected, got, describe: Callable[[int], str], what: str) -> str:
    """``"its gradient ... first differs at <sample>: expected .., got .. (k of n samples differ)"``, or ``""``."""
    d = first_difference(expected, got, atol=_GRAD_TOL, rtol=_GRAD_TOL)
    if d is None:
        return ""
    return (f"its gradient with respect to {what} first differs at {describe(d.index[0])}: expected "
            f"{d.expected:.4g}, got {d.got:.4g} ({d.count} of {d.size} samples differ)")


def _grad(out: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """d out / d leaf, zeros where ``out`` does not depend on it."""
    if not out.requires_grad:
        return torch.zeros_like(leaf)
    (g,) = torch.autograd.grad(out, leaf, allow_unused=True)
    return torch.zeros_like(leaf) if g is None else g


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
    """Per-sample losses of the common mistakes, in the order they are tried (a dict keeps it)."""
    new, old, adv = as_double(new), as_double(old), as_double(adv)
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
        "you clipped the product r·A instead of the ratio: the clipped term is clamp(r, 1 - eps, 1 + eps) · A":
            -torch.min(ratio * adv, torch.clamp(ratio * adv, lo, hi)),
        "the ratio is clamped to [-eps, eps]: the trust region is around 1, clamp(r, 1 - eps, 1 + eps)":
            per(ratio, adv, clip=lambda r: torch.clamp(r, -eps, eps)),
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
        return (f"wrong value for ratio {r:g}, advantage {a:g}, clip_coef {CLIP} (sample {bad} alone): expected "
                f"{expected_each[bad].item():.4f}, got {got_each[bad].item():.4f} "
                "(the loss is -min(r·A, clip(r, 1-eps, 1+eps)·A))")

    _compare_per_sample(got_each, expected_each, lambda: _surrogate_variants(new, old, adv, CLIP), describe)


def _surrogate_batch(fn, new, old, adv) -> None:
    """The whole batch at once: the mean of the per-sample minimum, not the sum or the min of the means."""
    got = _scalar(fn(new, old, adv, CLIP), "clipped_surrogate")
    expected = ref.clipped_surrogate(new, old, adv, CLIP)
    if _close(got, expected):
        return
    ratio = torch.exp(as_double(new) - as_double(old))
    a = as_double(adv)
    unclipped, clipped = ratio * a, torch.clamp(ratio, 1 - CLIP, 1 + CLIP) * a
    found = _name({
        f"you summed over the batch instead of taking the mean: {len(adv)} samples give {got.item():.4f}, expected "
        f"{expected.item():.4f} (the loss scale, and so the step size, would grow with the minibatch size)":
            as_double(expected) * len(adv),
        "you took the min of the two batch means, -min(mean(r·A), mean(clip(r)·A)); the min is per sample: "
        "-mean(min(r·A, clip(r)·A))": -torch.min(unclipped.mean(), clipped.mean()),
        "you took the min over the batch instead of the mean: -mean(min(r·A, clip(r)·A))":
            -torch.min(unclipped, clipped).min(),
    }, got)
    raise Diagnosis(found or f"each sample alone is right but the batch of {len(adv)} gives {got.item():.4f}, "
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

    Only ``new_logprobs`` requires grad: old log-probs and advantages are constants.

    Returns:
        How many samples are clipped.
    """
    new_g = new.clone().requires_grad_(True)
    out = _scalar(fn(new_g, old, adv, CLIP), "clipped_surrogate")
    if not out.requires_grad:
        raise Diagnosis("the loss carries no gradient to new_logprobs: did you .detach() it, call "
                        ".item(), or build a new tensor with torch.tensor(...)?")
    grad = _grad(out, new_g)
    new_r = new.clone().requires_grad_(True)
    expected_grad = _grad(ref.clipped_surrogate(new_r, old, adv, CLIP), new_r)
    if not _close(grad, expected_grad, _GRAD_TOL):
        clipped = expected_grad == 0
        leak = (grad != 0) & clipped
        if leak.any():
            i = int(leak.nonzero()[0])
            r, a = _SURROGATE_CASES[i]
            raise Diagnosis(f"the value is right but gradient flows through a clipped sample (ratio {r:g}, "
                            f"advantage {a:g}): there the min must pick the clipped, constant term")
        found = _name(_surrogate_gradient_variants(new, old, adv), grad)
        rows = _gradient_rows(expected_grad, grad, lambda i: "ratio {:g}, advantage {:g}".format(*_SURROGATE_CASES[i]),
                              "new_logprobs")
        raise Diagnosis(found or f"the value is right but {rows}")
    return int((expected_grad == 0).sum())


def _surrogate_gradient_variants(new, old, adv) -> dict:
    """The gradients with respect to new_logprobs that a detach in the wrong place gives, in the order tried."""
    def grad_of(loss):
        new_h = as_double(new).requires_grad_(True)
        return lambda: _grad(loss(torch.exp(new_h - as_double(old)), as_double(adv)), new_h)

    clamp = lambda r: torch.clamp(r, 1 - CLIP, 1 + CLIP)  # noqa: E731
    return {
        "the value is right but the ratio is detached in the unclipped term r·A: there the gradient must flow "
        "(only the clipped term is constant, and only outside [1 - eps, 1 + eps])":
            grad_of(lambda r, a: -torch.min(r.detach() * a, clamp(r) * a).mean()),
        "the value is right but the ratio is detached inside the clamp: where r is inside [1 - eps, 1 + eps] "
        "the two terms are equal, torch.min splits the gradient between them and the clamped term's half is lost; "
        "keep clamp(r, 1 - eps, 1 + eps) attached": grad_of(lambda r, a: -torch.min(r * a, clamp(r.detach()) * a)
                                                            .mean()),
    }


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
    """Per-sample losses of the common mistakes, in the order they are tried (a dict keeps it)."""
    new, old, ret = as_double(new), as_double(old), as_double(ret)
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
        "new_values and old_values are swapped: V_clip = old_values + clamp(new_values - old_values, -eps, eps) "
        "and the unclipped error is new_values - returns": 0.5 * torch.max(
            (old - ret) ** 2, (new + torch.clamp(old - new, -eps, eps) - ret) ** 2),
        "V_clip is the clipped difference alone: add it to old_values, V_clip = old_values + "
        "clamp(new_values - old_values, -eps, eps)": 0.5 * torch.max(unclipped,
                                                                     (torch.clamp(new - old, -eps, eps) - ret) ** 2),
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
                f"{ret[i].item():.2f}, clip_coef {CLIP} (sample {i} alone): expected {expected_each[i].item():.4f}, "
                f"got {got_each[i].item():.4f}")

    _compare_per_sample(got_each, expected_each, lambda: _value_variants(new, old, ret, CLIP), describe)


def _value_batch(got_full, new, old, ret) -> None:
    """The whole batch at once: the mean over (batch,) tensors, not a (batch, batch) broadcast, a sum or a max of
    the two means."""
    expected = ref.value_loss(new, old, ret, CLIP)
    if _close(got_full, expected):
        return
    n, o, r = as_double(new), as_double(old), as_double(ret)
    unclipped, clipped = (n - r) ** 2, (o + torch.clamp(n - o, -CLIP, CLIP) - r) ** 2
    found = _name({
        "a (batch, 1) tensor meets a (batch,) one and broadcasts to (batch, batch): every value is compared with "
        "every return. Keep all three (batch,) (squeeze(-1) the critic's output)":
            0.5 * torch.max((n[:, None] - r) ** 2, (o[:, None] + torch.clamp(n - o, -CLIP, CLIP)[:, None] - r) ** 2)
            .mean(),
        "you summed over the batch instead of taking the mean": as_double(expected) * len(new),
        "you took the max of the two batch means, 0.5 * max(mean((V - R)^2), mean((V_clip - R)^2)); the max is per "
        "sample: 0.5 * mean(max(...))": 0.5 * torch.max(unclipped.mean(), clipped.mean()),
    }, got_full)
    raise Diagnosis(found or f"each sample alone is right but the batch of {len(new)} gives {got_full.item():.4f}, "
                             f"expected the mean {expected.item():.4f}")


def _value_gradient(fn, new, old, ret) -> None:
    """The gradient reaches new_values, and equals the reference's (old values and returns are constants)."""
    new_g = new.clone().requires_grad_(True)
    out = _scalar(fn(new_g, old, ret, CLIP), "value_loss")
    if not out.requires_grad:
        raise Diagnosis("the value loss carries no gradient to new_values (detached, .item() or torch.tensor?)")
    new_r = new.clone().requires_grad_(True)
    expected = _grad(ref.value_loss(new_r, old, ret, CLIP), new_r)
    got = _grad(out, new_g)
    if not _close(got, expected, _GRAD_TOL):
        rows = _gradient_rows(expected, got, lambda i: (f"new V {new[i].item():.2f}, old V {old[i].item():.2f}, "
                                                        f"return {ret[i].item():.2f}"), "new_values")
        raise Diagnosis(f"the value is right but {rows}")


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
    broadcast; the gradient with respect to ``new_values`` (the only input that carries one); and,
    with ``clip_coef=None`` (the default), the plain ``0.5 * mean((V - R)^2)`` with ``old_values``
    unused (None).

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
        _value_gradient(fn, new, old, ret)
        _value_unclipped(fn, new, old, ret)
        return (f"{len(new)} cases (value moved less/more than eps, towards/away from the return), batch of 1, "
                "mean over the batch, gradient into new_values, clip_coef=None gives the unclipped loss")

    return run_check("value_loss", body,
                     hint="V_clip = old + clamp(new - old, -eps, eps); 0.5 * mean(max((new-R)^2, (V_clip-R)^2))",
                     quiet=quiet)


# --------------------------------------------------------------------------------------
# Task 3: the total loss
# --------------------------------------------------------------------------------------
_INPUT_NAMES = ["new_logprobs", "old_logprobs", "advantages", "new_values", "old_values", "returns", "entropy"]
_WITH_GRAD = (0, 3, 6)  # new_logprobs, new_values, entropy: the only inputs that carry gradient in training


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


def _norm(correction: int):
    """Per-minibatch advantage normalisation, with the unbiased (1) or the biased (0) std; both are right."""
    def normalise(a):
        return a - a.mean() if a.numel() < 2 else (a - a.mean()) / (a.std(correction=correction) + 1e-8)
    return normalise


_NORMS = (_norm(1), _norm(0))


def _terms(inputs, clip, norm) -> dict[str, torch.Tensor]:
    """The pieces of the total loss, right and wrong, in float64 (``inputs`` may carry gradient)."""
    new_lp, old_lp, adv, new_v, old_v, ret, ent = (t.double() for t in inputs)
    a = norm(adv)
    surrogate = lambda new, old, adv_: ref.clipped_surrogate(new, old, adv_, clip)  # noqa: E731
    value = lambda new, old, target: ref.value_loss(new, old, target, clip)  # noqa: E731
    return dict(
        pg=surrogate(new_lp, old_lp, a), v=value(new_v, old_v, ret), s=ent.mean(),
        pg_raw=surrogate(new_lp, old_lp, adv), pg_scaled=surrogate(new_lp, old_lp, adv / (adv.std() + 1e-8)),
        pg_centred=surrogate(new_lp, old_lp, adv - adv.mean()), pg_swapped=surrogate(old_lp, new_lp, a),
        pg_returns=surrogate(new_lp, old_lp, norm(ret)), v_advantages=value(new_v, old_v, adv),
        v_new_targets=value(new_v, old_v, adv + new_v), v_norm_targets=value(new_v, old_v, a + new_v),
        v_unclipped=ref.value_loss(new_v, None, ret), v_swapped=value(old_v, new_v, ret),
        v_norm_returns=value(new_v, old_v, norm(ret)), s_sum=ent.sum())


#: The total losses of the common mistakes, as functions of (terms, vf_coef, ent_coef), in the order they are
#: tried: a sign, a missing or swapped coefficient, a target that is not constant, the normalisation, then an
#: argument swapped or a term changed.
_TOTAL_HYPOTHESES = [
    ("the entropy bonus has the wrong sign: minimising this loss would make the policy less random — more "
     "deterministic — instead of rewarding exploration (loss = policy - ent_coef * entropy + vf_coef * value)",
     lambda t, vf, c2: t["pg"] + c2 * t["s"] + vf * t["v"]),
    ("the advantages are not normalised: normalise them within the minibatch, (A - mean) / (std + 1e-8), before "
     "the clipped surrogate", lambda t, vf, c2: t["pg_raw"] - c2 * t["s"] + vf * t["v"]),
    ("the coefficients are swapped: vf_coef multiplies the value loss and ent_coef the entropy",
     lambda t, vf, c2: t["pg"] - vf * t["s"] + c2 * t["v"]),
    ("the value loss has the wrong sign: the critic's error must be added (loss = policy - ent_coef * entropy + "
     "vf_coef * value)", lambda t, vf, c2: t["pg"] - c2 * t["s"] - vf * t["v"]),
    ("value targets are not detached: your value target moves with new_values (returns recomputed as advantages + "
     "new_values?) — use the returns argument, computed from the rollout's values, as a constant",
     lambda t, vf, c2: t["pg"] - c2 * t["s"] + vf * t["v_new_targets"]),
    ("the entropy bonus is missing: subtract ent_coef * mean(entropy)", lambda t, vf, c2: t["pg"] + vf * t["v"]),
    ("the value loss is missing: add vf_coef * value_loss(...)", lambda t, vf, c2: t["pg"] - c2 * t["s"]),
    ("the advantages are normalised without centring: subtract the mean, then divide by the std",
     lambda t, vf, c2: t["pg_scaled"] - c2 * t["s"] + vf * t["v"]),
    ("the advantages are centred but not divided by their std: (A - mean) / (std + 1e-8)",
     lambda t, vf, c2: t["pg_centred"] - c2 * t["s"] + vf * t["v"]),
    ("value targets are not detached: your value target moves with new_values (returns recomputed as normalised "
     "advantages + new_values?) — use the returns argument as a constant",
     lambda t, vf, c2: t["pg"] - c2 * t["s"] + vf * t["v_norm_targets"]),
    ("the policy term has the wrong sign: loss = clipped_surrogate(...) - ent_coef * entropy + vf_coef * value, "
     "and clipped_surrogate is already the negated objective", lambda t, vf, c2: -t["pg"] - c2 * t["s"] + vf * t["v"]),
    ("the entropy is summed over the batch: use its mean, like the other two terms",
     lambda t, vf, c2: t["pg"] - c2 * t["s_sum"] + vf * t["v"]),
    ("the value term is doubled: value_loss already has its 0.5 factor (0.5 * mean(max(...))), and vf_coef "
     "multiplies it once", lambda t, vf, c2: t["pg"] - c2 * t["s"] + 2 * vf * t["v"]),
    ("the value loss is not clipped: ppo_loss clips it too, value_loss(new_values, old_values, returns, clip_coef)",
     lambda t, vf, c2: t["pg"] - c2 * t["s"] + vf * t["v_unclipped"]),
    ("new_logprobs and old_logprobs are swapped in the surrogate: the ratio is exp(new_logprobs - old_logprobs)",
     lambda t, vf, c2: t["pg_swapped"] - c2 * t["s"] + vf * t["v"]),
    ("new_values and old_values are swapped in the value loss: value_loss(new_values, old_values, returns, ...)",
     lambda t, vf, c2: t["pg"] - c2 * t["s"] + vf * t["v_swapped"]),
    ("the returns are normalised too: only the advantages are; the value targets stay in the units of the values",
     lambda t, vf, c2: t["pg"] - c2 * t["s"] + vf * t["v_norm_returns"]),
    ("advantages and returns are swapped: the surrogate takes the normalised advantages, the value loss the returns",
     lambda t, vf, c2: t["pg_returns"] - c2 * t["s"] + vf * t["v_advantages"]),
]


def _settings(clip, vf, c2):
    """The coefficients the loss is evaluated at: the check's, then each term alone (policy; + value; + entropy)."""
    return [(clip, vf, c2), (clip, 0.0, 0.0), (clip, 1.0, 0.0), (clip, 0.0, 1.0)]


def _call(fn, inputs, clip, vf, c2) -> torch.Tensor:
    return _scalar(fn(*[t.clone() for t in inputs], clip, vf, c2), "ppo_loss")


def _total_value(fn, inputs, clip, vf, c2):
    """The total loss on the batch equals the reference's (with either std); returns the normaliser it used."""
    got = [_call(fn, inputs, *s).detach() for s in _settings(clip, vf, c2)]
    for norm in _NORMS:
        if _close(got, _over_settings(_correct_total, inputs, clip, vf, c2, norm)()):
            return norm
    hypotheses = [(name, _over_settings(h, inputs, clip, vf, c2, norm)) for name, h in _TOTAL_HYPOTHESES
                  for norm in _NORMS]
    found = _name(hypotheses, got)
    if found:
        raise Diagnosis(found)
    # the normalisation the learner's policy term uses, when it is right (either std is)
    norm = next((n for n in _NORMS if _close(got[1], _terms(inputs, clip, n)["pg"])), _NORMS[0])
    expected = float(_correct_total(_terms(inputs, clip, norm), vf, c2))
    raise Diagnosis(f"the total loss is {got[0].item():.4f}, expected {expected:.4f} on a batch of {len(inputs[0])} "
                    f"(clip_coef {clip}, vf_coef {vf}, ent_coef {c2}); {_localise_term(fn, inputs, clip, got, norm)}; "
                    f"none of the {len(_TOTAL_HYPOTHESES)} common mistakes tried reproduces your loss")


def _over_settings(hypothesis, inputs, clip, vf, c2, norm):
    def produce():
        terms = _terms(inputs, clip, norm)
        return [hypothesis(terms, vf_, c2_) for _, vf_, c2_ in _settings(clip, vf, c2)]
    return produce


def _correct_total(t, vf, c2):
    """The total loss from its terms (see :func:`_terms`)."""
    return t["pg"] - c2 * t["s"] + vf * t["v"]


def _describe_sample(inputs, norm):
    new_lp, old_lp, adv, new_v, old_v, ret, ent = inputs
    a = norm(adv.double())
    return {
        0: lambda i: (f"sample {i} (ratio {torch.exp(new_lp[i] - old_lp[i]).item():.3f}, advantage "
                      f"{adv[i].item():.3f}, normalised {a[i].item():.3f})"),
        3: lambda i: (f"sample {i} (new V {new_v[i].item():.3f}, old V {old_v[i].item():.3f}, return "
                      f"{ret[i].item():.3f})"),
        6: lambda i: f"sample {i} (entropy {ent[i].item():.3f})",
    }


def _localise_term(fn, inputs, clip, got, norm) -> str:
    """Which term of the loss differs (from the loss at vf_coef, ent_coef = (0, 0), (1, 0), (0, 1)), and the first
    sample where its gradient differs."""
    policy, with_value, with_entropy = got[1:]
    terms = _terms(inputs, clip, norm)
    parts = [("policy", policy, terms["pg"], (0.0, 0.0), 0, "your ppo_loss with vf_coef = ent_coef = 0 gives",
              "clipped_surrogate(normalised A)"),
             ("value", with_value - policy, terms["v"], (1.0, 0.0), 3, "raising vf_coef from 0 to 1 adds",
              "value_loss(new_values, old_values, returns, clip_coef)"),
             ("entropy", with_entropy - policy, -terms["s"], (0.0, 1.0), 6, "raising ent_coef from 0 to 1 adds",
              "-mean(entropy)")]
    wrong = [part for part in parts if not _close(part[1], part[2])]
    if not wrong:
        return ("each term alone is right (the loss at vf_coef, ent_coef = (0, 0), (1, 0) and (0, 1)), but they do "
                "not combine as policy - ent_coef * entropy + vf_coef * value")
    texts = []
    for k, (name, value, expected, (vf, c2), index, how, what) in enumerate(wrong):
        texts.append(f"the {name} term {'differs' if k == 0 else 'differs too'}: {how} {float(value):.4f}, expected "
                     f"{what} = {float(expected):.4f}")
        if k == 0:
            rows = _term_gradient_rows(fn, inputs, clip, vf, c2, index, norm)
            texts[-1] += f"; {rows}" if rows else ""
    return "; ".join(texts)


def _term_gradient_rows(fn, inputs, clip, vf, c2, index, norm) -> str:
    """Where the gradient of the learner's loss (at these coefficients) with respect to ``inputs[index]`` first
    differs from the reference's, or ``""`` when it carries none or agrees."""
    leaves = [t.clone().requires_grad_(i == index) for i, t in enumerate(inputs)]
    try:
        out = _scalar(fn(*leaves, clip, vf, c2), "ppo_loss")
        if not out.requires_grad:
            return ""
        got = _grad(out, leaves[index])
    except Exception:  # noqa: BLE001 -- localisation only: a failing gradient leaves the value's diagnosis
        return ""
    ref_leaves = [t.clone().double().requires_grad_(i == index) for i, t in enumerate(inputs)]
    expected = _grad(_correct_total(_terms(ref_leaves, clip, norm), vf, c2), ref_leaves[index])
    return _gradient_rows(expected, got, _describe_sample(inputs, norm)[index], _INPUT_NAMES[index])


def _total_gradients(fn, inputs, clip, vf, c2, norm) -> None:
    """Gradients into new_logprobs, new_values and entropy, as the reference's; only those three require grad
    (the others are constants in training: detaching them, or .item() statistics, changes nothing)."""
    leaves = [t.clone().requires_grad_(i in _WITH_GRAD) for i, t in enumerate(inputs)]
    out = _scalar(fn(*leaves, clip, vf, c2), "ppo_loss")
    if not out.requires_grad:
        raise Diagnosis("the loss carries no gradient: did you .detach() it or call .item()?")
    got = [_grad(out, leaves[i]) for i in _WITH_GRAD]
    expected = _total_reference_gradients(inputs, clip, vf, c2, norm)
    if _close(got, expected, _GRAD_TOL):
        return
    found = _name(_gradient_hypotheses(expected), got)
    if found:
        raise Diagnosis(found)
    k = next(k for k in range(3) if not _close(got[k], expected[k], _GRAD_TOL))
    index = _WITH_GRAD[k]
    rows = _gradient_rows(expected[k], got[k], _describe_sample(inputs, norm)[index], _INPUT_NAMES[index])
    raise Diagnosis(f"the value is right but {rows}; the loss must depend on new_logprobs, new_values and entropy "
                    "exactly as the formula does (no term detached, no constant computed from them)")


def _total_reference_gradients(inputs, clip, vf, c2, norm) -> list[torch.Tensor]:
    """The reference's gradients with respect to new_logprobs, new_values, entropy (float64)."""
    leaves = [t.clone().double().requires_grad_(i in _WITH_GRAD) for i, t in enumerate(inputs)]
    out = _correct_total(_terms(leaves, clip, norm), vf, c2)
    return [_grad(out, leaves[i]) for i in _WITH_GRAD]


def _gradient_hypotheses(expected):
    """Gradients of a term detached by mistake (``.detach()``, ``.item()``, ``torch.no_grad()``), in the order tried."""
    zero = torch.zeros_like
    return [
        ("the value is right but the policy term carries no gradient to new_logprobs: is the ratio or the surrogate "
         "computed under torch.no_grad(), detached, or rebuilt from .item()?", [zero(expected[0]), *expected[1:]]),
        ("the value is right but the value term carries no gradient to new_values: is value_loss computed under "
         "torch.no_grad(), detached, or rebuilt from .item()?", [expected[0], zero(expected[1]), expected[2]]),
        ("the value is right but the entropy bonus carries no gradient to entropy: the bonus only encourages "
         "exploration through its gradient; do not detach it", [*expected[:2], zero(expected[2])]),
    ]


def _total_single_sample(fn, inputs, clip, vf, c2) -> None:
    """A minibatch of one sample: std is undefined, the normalised advantage is 0."""
    one = [t[:1] for t in inputs]
    got1 = _scalar(fn(*one, clip, vf, c2), "ppo_loss")
    expected1 = ref.ppo_loss(*one, clip_coef=clip, vf_coef=vf, ent_coef=c2).loss
    if not torch.isfinite(got1):
        raise Diagnosis("a minibatch of one sample gives a non-finite loss: its std is undefined (NaN); "
                        "for one sample return the centred advantage, A - mean(A) = 0")
    if not _close(got1, expected1):
        raise Diagnosis(f"a minibatch of one sample gives {got1.item():.4f}, expected {expected1.item():.4f}: "
                        "one sample normalises to A - mean(A) = 0")


def check_ppo_loss(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
    clip_coef, vf_coef, ent_coef) -> 0-d tensor``.

    Verifies the sign-flipped PPO eq. 9 with per-minibatch advantage normalisation (unbiased or biased
    std), ``policy - ent_coef * mean(entropy) + vf_coef * value`` (clipped value loss), against
    :func:`ppo_course.losses.ppo_loss` on a random batch with advantages far from mean 0 / std 1, at the
    check's coefficients and with each term alone (``vf_coef``, ``ent_coef`` = (0, 0), (1, 0), (0, 1));
    a batch of one sample (normalised advantage 0, not NaN); and the gradients with respect to
    ``new_logprobs``, ``new_values`` and ``entropy``, the only inputs that require grad (the others
    are constants, which the learner may detach).

    Args:
        fn: the learner's function; seven ``(batch,)`` float32 tensors then three floats.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    clip, vf, c2 = 0.2, 0.5, 0.05

    def body() -> str:
        inputs = _loss_inputs()
        norm = _total_value(fn, inputs, clip, vf, c2)
        _total_gradients(fn, inputs, clip, vf, c2, norm)
        _total_single_sample(fn, inputs, clip, vf, c2)
        return (f"total loss on a batch of {len(inputs[0])} with per-minibatch advantage normalisation, signs and "
                "coefficients of all three terms, gradients into new log-probs/values/entropy only, batch of 1")

    return run_check("ppo_loss", body,
                     hint="normalise A, then clipped_surrogate - ent_coef * entropy.mean() + vf_coef * value_loss",
                     quiet=quiet)


# --------------------------------------------------------------------------------------
# Task 4: approx KL
# --------------------------------------------------------------------------------------
def _kl_variants(new, old, expected) -> dict:
    """The batch estimates of the common mistakes, in the order they are tried."""
    logratio = as_double(new) - as_double(old)
    k3 = (torch.expm1(logratio) - logratio)
    return {
        "that is the naive estimator mean(old - new) = mean(-log r): unbiased but noisy, and it can go "
        "negative; use mean((r - 1) - log r), which is never negative per sample": (-logratio).mean(),
        "that is the naive estimator with the wrong sign, mean(new - old); use mean((r - 1) - log r) "
        "with r = exp(new - old)": logratio.mean(),
        "the ratio is inverted: r = exp(new_logprobs - old_logprobs), not exp(old - new)":
            ((torch.exp(-logratio) - 1) + logratio).mean(),
        "the sign is wrong: mean((r - 1) - log r) is never negative": -as_double(expected),
        "that is the k2 estimator 0.5 * mean((log r)^2): biased; use mean((r - 1) - log r)":
            0.5 * (logratio ** 2).mean(),
        "you summed over the batch instead of taking the mean": k3.sum(),
    }


def check_approx_kl(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``approx_kl(new_logprobs, old_logprobs) -> 0-d tensor``: mean((r - 1) - log r), r = exp(new - old).

    Verifies the low-variance "k3" estimator against :func:`ppo_course.losses.approx_kl` on a
    random batch, that it is 0 when nothing changed, and a batch of one; names the naive estimator
    ``mean(old - new)``, an inverted ratio, a flipped sign, the k2 estimator or a sum when one of them
    reproduces the value, and otherwise the first sample whose estimate alone is wrong.

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
            variants = _kl_variants(new, old, expected)
            found = _name(variants, got.detach())
            raise Diagnosis(found or f"expected {expected.item():.5f}, got {got.item():.5f} on 16 samples "
                                     f"(mean((r - 1) - log r) with r = exp(new - old)); {_kl_rows(fn, new, old)}; "
                                     f"none of the {len(variants)} common mistakes tried reproduces your value")
        zero = _scalar(fn(old.clone(), old.clone()), "approx_kl")
        if abs(zero.item()) > 1e-7:
            raise Diagnosis(f"with new_logprobs == old_logprobs the KL estimate must be 0, got {zero.item():.3g}")
        one = _scalar(fn(new[:1], old[:1]), "approx_kl")
        if not _close(one, ref.approx_kl(new[:1], old[:1])):
            raise Diagnosis("a batch of one sample gives a wrong value")
        return "k3 estimator on 16 samples, 0 when the policy did not change, batch of 1"

    return run_check("approx_kl", body, hint="r = exp(new - old); mean((r - 1) - log r)", quiet=quiet)


def _kl_rows(fn, new, old) -> str:
    """Where the estimate of one sample alone first differs, or that every sample alone is right."""
    got = _per_sample(fn, new, old)
    expected = torch.stack([ref.approx_kl(new[i:i + 1], old[i:i + 1]) for i in range(len(new))])
    d = first_difference(expected, got, atol=_TOL, rtol=_TOL)
    if d is None:
        return "each sample alone is right, so the batch reduction is not the mean"
    i = d.index[0]
    return (f"sample {i} alone (log r = {(new[i] - old[i]).item():.4f}) gives {d.got:.5f}, expected {d.expected:.5f} "
            f"({d.count} of {d.size} samples differ)")
