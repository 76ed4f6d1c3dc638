"""Training curves from a run's ``metrics.csv``."""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

from ..diagnose import HEALTHY_RANGES
from ..logging import read_metrics

#: Default panels: (column, title, healthy range or None); the ranges are the ones diagnose() uses.
DEFAULT_PANELS: tuple[tuple[str, str, tuple[float, float] | None], ...] = (
    ("eval/mean_return", "evaluation return", None),
    ("rollout/episodic_return", "training episode return", None),
    ("train/entropy", "policy entropy (nats)", None),
    ("train/approx_kl", "approx KL", HEALTHY_RANGES["train/approx_kl"]),
    ("train/clip_fraction", "clip fraction", HEALTHY_RANGES["train/clip_fraction"]),
    ("train/explained_variance", "explained variance", HEALTHY_RANGES["train/explained_variance"]),
    ("train/value_loss", "value loss", None),
    ("train/policy_loss", "policy loss", None),
)


def plot_training_curves(metrics: str | os.PathLike | Mapping[str, Sequence[float]],
                         panels: Sequence[tuple[str, str, tuple[float, float] | None]] = DEFAULT_PANELS,
                         success_threshold: float | None = None, ncols: int = 4, fig=None):
    """One small plot per metric against environment steps; returns the matplotlib Figure.

    Args:
        metrics: a run directory, a ``metrics.csv`` path, or ``{column: values}`` as from
            :func:`ppo_course.logging.read_metrics` (must include ``global_step``).
        panels: ``(column, title, healthy_range)``; a healthy range is shaded green.
        success_threshold: dashed line on the return panels (LunarLander: 200).
        ncols: panels per row.
        fig: draw into this figure (cleared first) instead of a new one -- the live dashboard reuses one.
    """
    import matplotlib.pyplot as plt

    data = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else metrics
    steps = np.asarray(data["global_step"], dtype=float)
    nrows = math.ceil(len(panels) / ncols)
    if fig is None:
        fig = plt.figure(figsize=(3.2 * ncols, 2.6 * nrows))
    else:
        fig.clear()
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (column, title, healthy) in zip(axes, panels):
        values = np.asarray(data.get(column, [math.nan] * len(steps)), dtype=float)
        ok = np.isfinite(values)
        # markers for evaluations, and for any curve with a single point (a line of one point draws nothing)
        dots = column.startswith("eval/") or ok.sum() == 1
        ax.plot(steps[ok], values[ok], marker="o" if dots else None, ms=3, lw=1.5)
        if healthy is not None:
            ax.axhspan(*healthy, color="tab:green", alpha=0.12, label="healthy range")
        if success_threshold is not None and "return" in column:
            ax.axhline(success_threshold, color="tab:red", ls="--", lw=1, label=f"solved ({success_threshold:g})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
