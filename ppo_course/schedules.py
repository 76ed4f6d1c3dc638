"""Hyperparameter schedules, as pure functions of training progress.

All take ``step`` (environment steps done so far) and ``total`` (the training budget in
environment steps) and return the value to use now, so a resumed run gets exactly the
value an uninterrupted one would have had.
"""

from __future__ import annotations


def linear_schedule(start: float, end: float, step: int, total: int) -> float:
    """Linear interpolation from ``start`` (step 0) to ``end`` (step >= total)."""
    if total <= 0:
        return end
    frac = min(max(step / total, 0.0), 1.0)
    return start + frac * (end - start)


def annealed_lr(initial_lr: float, step: int, total: int, anneal: bool = True) -> float:
    """Learning rate annealed linearly to 0 over training (PPO paper, Atari settings; CleanRL ``anneal_lr``).

    CleanRL computes ``frac = 1 - (update - 1) / num_updates`` at the start of each update;
    this is the same line expressed in environment steps.
    """
    return linear_schedule(initial_lr, 0.0, step, total) if anneal else initial_lr


def entropy_coef(step: int, total: int, start: float, final: float | None = None, warmup_steps: int = 0) -> float:
    """Entropy coefficient with an optional constant warm-up, then a linear decay.

    * ``final is None``: constant ``start``.
    * ``warmup_steps == 0``: plain linear annealing from ``start`` to ``final`` over training.
    * otherwise: held at ``start`` for ``warmup_steps``, then linear from ``start`` to ``final``
      over the remaining ``total - warmup_steps`` steps (explore on purpose first, then let the
      policy sharpen).
    """
    if final is None:
        return start
    if step < warmup_steps:
        return start
    return linear_schedule(start, final, step - warmup_steps, total - warmup_steps)
