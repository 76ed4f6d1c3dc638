"""Interactive explorers for the notebooks: the clipped objective and GAE's lambda dial.

Each explorer is a plain plotting function (usable headless, and what the tests call) plus a thin
ipywidgets wrapper. A widget's picture lives in the widget's state, which pages that do not run
widgets (GitHub's viewer, nbconvert to HTML) do not show; so the notebooks follow each explorer
with one static call of its plotting function.
"""

from __future__ import annotations

import numpy as np
import torch

from ..advantages import compute_gae
from ..losses import clipped_surrogate


# --------------------------------------------------------------------------------------
# The clipped surrogate
# --------------------------------------------------------------------------------------
def clipped_objective_curve(ratios: np.ndarray, advantage: float, clip_coef: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample L^CLIP(r) = min(r A, clip(r, 1-eps, 1+eps) A) and the unclipped r A, for each ratio r.

    Computed with :func:`ppo_course.losses.clipped_surrogate` (which returns the *negated* mean),
    so the picture is the package's loss, not a second copy of it.
    """
    old = torch.zeros(1)
    clipped = np.array([-clipped_surrogate(torch.log(torch.tensor([r])), old, torch.tensor([advantage]),
                                           clip_coef).item() for r in ratios])
    return clipped, ratios * advantage


def plot_clipped_objective(clip_coef: float = 0.2, ratio_max: float = 2.0, ax=None):
    """L^CLIP against the ratio for A = +1 and A = -1 side by side, clip range shaded. Returns the Figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    else:
        axes, fig = ax, ax[0].figure
    ratios = np.linspace(0.01, ratio_max, 400)
    for axis, adv in zip(axes, (1.0, -1.0)):
        clipped, unclipped = clipped_objective_curve(ratios, adv, clip_coef)
        axis.plot(ratios, unclipped, ls="--", color="gray", label="unclipped  r·A")
        axis.plot(ratios, clipped, lw=2.5, color="tab:blue", label="L$^{CLIP}$ = min(r·A, clip(r)·A)")
        axis.axvspan(1 - clip_coef, 1 + clip_coef, color="tab:green", alpha=0.12, label=f"[1-ε, 1+ε], ε={clip_coef:g}")
        axis.axvline(1.0, color="black", lw=0.8)
        axis.set_title(f"advantage A = {adv:+g}: " + ("good action, push r up" if adv > 0 else "bad action, push r down"),
                       fontsize=10)
        axis.set_xlabel("probability ratio r = π_new(a|s) / π_old(a|s)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("objective (maximised)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def clipping_explorer():
    """Sliders for ε and the ratio range over :func:`plot_clipped_objective`."""
    import matplotlib.pyplot as plt
    from ipywidgets import FloatSlider, interact

    def draw(clip_coef=0.2, ratio_max=2.0):
        plot_clipped_objective(clip_coef, ratio_max)
        plt.show()

    return interact(draw, clip_coef=FloatSlider(value=0.2, min=0.05, max=0.5, step=0.05, description="ε"),
                    ratio_max=FloatSlider(value=2.0, min=1.5, max=4.0, step=0.25, description="max ratio"))


# --------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------
def plot_gae(rewards, values, terminations, truncations, next_value, gamma: float = 0.99,
             gae_lambda: float = 0.95, final_values=None, axes=None):
    """Rewards, V(s), return targets and advantages of one environment's trajectory for one (gamma, lambda).

    Args are 1-D sequences of one trajectory (as stored by the trainer for one env); they are passed
    to :func:`ppo_course.advantages.compute_gae` as a ``(T, 1)`` rollout. Three panels, top to bottom
    (``axes``: three Axes to draw on, or None for a new figure): the rewards, on their own axis so that
    small per-step rewards stay visible next to V; V(s_t) with the return targets R_t; the advantages.
    A red dotted line after step t marks an episode that ended at t. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    col = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1)  # noqa: E731
    adv, ret = compute_gae(col(rewards), col(values), col(terminations), col(truncations),
                           torch.tensor([float(next_value)]), None if final_values is None else col(final_values),
                           gamma, gae_lambda)
    rewards = np.asarray(rewards, dtype=np.float32)
    steps = np.arange(len(rewards))
    if axes is None:
        fig, axes = plt.subplots(3, 1, figsize=(10, 6), sharex=True, height_ratios=(1, 1.3, 1.3))
    fig = axes[0].figure
    for ax in axes:
        for t in np.flatnonzero(np.asarray(terminations) + np.asarray(truncations)):
            ax.axvline(t + 0.5, color="tab:red", ls=":", lw=1.2, zorder=1)  # between step t and the next episode
        ax.grid(alpha=0.3)
        ax.set_axisbelow(True)  # grid and reference lines under the data
    axes[0].bar(steps, rewards, width=1.0, color=np.where(rewards >= 0, "tab:gray", "tab:purple"), zorder=2)
    axes[0].axhline(0, color="black", lw=0.6, zorder=1)
    axes[0].set_ylabel("reward r_t")
    axes[1].plot(steps, values, color="tab:orange", label="V(s_t)", zorder=3)
    axes[1].plot(steps, ret[:, 0], color="tab:green", label="return target R_t = A_t + V(s_t)", zorder=3)
    axes[1].set_ylabel("value")
    axes[1].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1), ncol=2, frameon=False, borderaxespad=0.1)
    axes[2].plot(steps, adv[:, 0], color="tab:blue", zorder=3)
    axes[2].axhline(0, color="black", lw=0.8, zorder=1)
    axes[2].set_ylabel("advantage A_t")
    axes[0].set_title(f"GAE with γ = {gamma:g}, λ = {gae_lambda:g} (red dotted: episode ends)", fontsize=10)
    axes[-1].set_xlabel("step t")
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


def gae_explorer(rewards, values, terminations, truncations, next_value, final_values=None,
                 gamma: float = 0.99, gae_lambda: float = 0.95):
    """Sliders for γ and λ (starting at ``gamma``, ``gae_lambda``) over :func:`plot_gae` on one trajectory."""
    import matplotlib.pyplot as plt
    from ipywidgets import FloatSlider, interact

    def draw(gamma=gamma, gae_lambda=gae_lambda):
        plot_gae(rewards, values, terminations, truncations, next_value, gamma, gae_lambda, final_values)
        plt.show()

    return interact(draw, gamma=FloatSlider(value=gamma, min=0.8, max=0.999, step=0.001, readout_format=".3f",
                                            description="γ"),
                    gae_lambda=FloatSlider(value=gae_lambda, min=0.0, max=1.0, step=0.05, description="λ"))
