"""The debugging checklist as code: read a run's ``metrics.csv`` and name what looks wrong.

Each rule is one symptom from the course's debugging checklist and its guide to reading the
metrics (notebook 08), with the fix the checklist suggests. The thresholds are rules of thumb for
discrete-action PPO with CleanRL-style settings, not laws; :data:`HEALTHY_RANGES` is also what
the plots shade, so the pictures and the diagnosis agree.

    >>> from ppo_course import diagnose
    >>> for finding in diagnose("runs/lunar"): print(finding)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .logging import read_metrics

#: metric -> (low, high) range a healthy run usually stays in, late in training.
HEALTHY_RANGES: dict[str, tuple[float, float]] = {
    "train/approx_kl": (1e-4, 0.05),
    "train/clip_fraction": (0.02, 0.3),
    "train/explained_variance": (0.0, 1.0),
}


#: The findings that mean the policy itself broke (``ppo-course train`` flags them when a run ends).
COLLAPSE_SYMPTOMS = ("entropy collapsed early", "value loss diverging")


@dataclass
class Finding:
    """One symptom: what was seen (with numbers) and what to try."""

    symptom: str
    evidence: str
    fix: str

    def __str__(self) -> str:
        return f"✗ {self.symptom}: {self.evidence}. Try: {self.fix}"


def _series(data: Mapping[str, Sequence[float]], key: str) -> np.ndarray:
    values = np.asarray(data.get(key, []), dtype=float)
    return values[np.isfinite(values)]


def _late(values: np.ndarray) -> np.ndarray:
    """The second half of a series (where a healthy run has settled)."""
    return values[len(values) // 2:]


#: The "too low" rules only judge updates whose learning rate is at least this share of the first one.
ACTIVE_LR_SHARE = 0.25
#: One update with approx_kl above this (twice the healthy band's top) is a spike.
KL_SPIKE = 0.1


def _late_while_learning(data: Mapping[str, Sequence[float]], key: str) -> np.ndarray:
    """The second half of ``key`` over the updates whose learning rate is still >= ACTIVE_LR_SHARE of its start.

    With linear annealing the last updates of a healthy run are tiny by design (the learning rate
    goes to 0), so judging "too small" over them would flag every annealed run. Without a
    ``charts/learning_rate`` column (or with a constant one) this is the plain second half.
    """
    values = np.asarray(data.get(key, []), dtype=float)
    lr = np.asarray(data.get("charts/learning_rate", []), dtype=float)
    if len(lr) == len(values) and len(lr) and np.isfinite(lr[0]) and lr[0] > 0:
        values = values[lr >= ACTIVE_LR_SHARE * lr[0]]
    values = _late(values)
    return values[np.isfinite(values)]


def diagnose(run: str | os.PathLike | Mapping[str, Sequence[float]], min_updates: int = 8) -> list[Finding]:
    """Check a run against the debugging checklist; return the findings (empty: nothing looks wrong).

    Args:
        run: a run directory, a ``metrics.csv`` path, or ``{column: values}`` as from
            :func:`ppo_course.logging.read_metrics`.
        min_updates: runs shorter than this are not judged (too little to go on).

    Rules (each yields at most one :class:`Finding`):

    * entropy collapsing early: within the first quarter of the run the policy entropy falls below
      a quarter of its starting value;
    * approx-KL too high (late median > 0.05), or spiking (any update above 0.1 while the median is
      fine: a few updates jumped far from the policy that collected the data);
    * clip fraction too high (late median > 0.3);
    * approx-KL too low (< 1e-4) or clip fraction too low (< 0.02), judged only over the updates whose
      learning rate is still at least a quarter of its start: an annealed run's last updates are
      small by design;
    * explained variance <= 0 late in training: the critic predicts the returns no better than a constant;
    * value loss diverging: the last quarter's mean is over 10x the first quarter's and still rising;
    * flat returns: the last fifth of episode returns is no better than the first fifth.
    """
    data = read_metrics(run) if isinstance(run, (str, os.PathLike)) else run
    findings: list[Finding] = []
    entropy = _series(data, "train/entropy")
    if len(entropy) < min_updates:
        return findings

    quarter = max(1, len(entropy) // 4)
    if entropy[0] > 0 and entropy[:quarter].min() < 0.25 * entropy[0]:
        findings.append(Finding(
            "entropy collapsed early",
            f"policy entropy fell from {entropy[0]:.2f} to {entropy[:quarter].min():.2f} nats in the first "
            f"quarter of training",
            "raise ent_coef (or --preset explore), lower the learning rate, or use fewer update_epochs"))

    kl_all = _series(data, "train/approx_kl")
    kl = np.median(_late(kl_all)) if len(kl_all) else math.nan
    kl_active = _late_while_learning(data, "train/approx_kl")
    kl_low = np.median(kl_active) if len(kl_active) else kl
    lo, hi = HEALTHY_RANGES["train/approx_kl"]
    spikes = np.flatnonzero(np.asarray(data.get("train/approx_kl", []), dtype=float) > KL_SPIKE)
    if kl > hi:
        findings.append(Finding("approx-KL too high", f"median approx_kl {kl:.3f} > {hi}: each update moves the "
                                "policy far from the one that collected the data",
                                "lower learning_rate, use fewer update_epochs, or set target_kl (e.g. 0.02)"))
    elif len(spikes):
        steps = np.asarray(data.get("global_step", []), dtype=float)
        worst = spikes[np.argmax(np.asarray(data["train/approx_kl"], dtype=float)[spikes])]
        where = f" at step {steps[worst]:.0f}" if len(steps) > worst else ""
        findings.append(Finding("approx-KL spikes", f"{len(spikes)} update(s) had approx_kl > {KL_SPIKE} (max "
                                f"{float(data['train/approx_kl'][worst]):.2f}{where}) although the median, {kl:.3f}, "
                                "is healthy: some updates jumped far from the data", "check that clipping is on "
                                "(clip_coef 0.1-0.3), set target_kl (e.g. 0.02), or lower learning_rate"))
    if kl <= hi and kl_low < lo:
        findings.append(Finding("approx-KL too low", f"median approx_kl {kl_low:.1e} < {lo:g} while the learning rate "
                                "was still high: the policy hardly changes", "raise learning_rate or update_epochs"))

    clip = _series(data, "train/clip_fraction")
    if len(clip):
        cf = float(np.median(_late(clip)))
        active = _late_while_learning(data, "train/clip_fraction")
        lo, hi = HEALTHY_RANGES["train/clip_fraction"]
        if cf > hi:
            findings.append(Finding("clip fraction too high", f"median clip_fraction {cf:.2f} > {hi}: most samples hit "
                                    "the clip, so their gradient is zero", "lower learning_rate or update_epochs"))
        elif len(active) and (cf := float(np.median(active))) < lo:
            findings.append(Finding("clip fraction too low", f"median clip_fraction {cf:.3f} < {lo} while the learning "
                                    "rate was still high: the clip is never active (or clipping is off)",
                                    "raise learning_rate; check clip_coef"))

    ev = _series(data, "train/explained_variance")
    if len(ev) and np.median(_late(ev)) <= 0:
        findings.append(Finding("critic not learning", f"median explained variance {np.median(_late(ev)):.2f} <= 0: "
                                "V(s) predicts the returns no better than a constant",
                                "normalise rewards (norm_reward), check vf_coef, lower the learning rate"))

    vloss = _series(data, "train/value_loss")
    if len(vloss) >= min_updates:
        q = max(1, len(vloss) // 4)
        first, last = vloss[:q].mean(), vloss[-q:].mean()
        rising = vloss[-q:].mean() > vloss[-2 * q:-q].mean() if len(vloss) >= 2 * q else True
        if first > 0 and last > 10 * first and rising:
            findings.append(Finding("value loss diverging", f"value loss rose from {first:.3g} to {last:.3g} and "
                                    "is still rising", "lower learning_rate, normalise rewards, enable clip_vloss"))

    returns = _series(data, "rollout/episodic_return")
    if len(returns) >= 10:
        fifth = max(2, len(returns) // 5)
        early, late = returns[:fifth], returns[-fifth:]
        spread = max(np.std(returns), 1e-8)
        if late.mean() - early.mean() < 0.1 * spread:
            findings.append(Finding("flat returns", f"mean episode return went from {early.mean():.1f} (first fifth) "
                                    f"to {late.mean():.1f} (last fifth)",
                                    "check the other findings first; then learning_rate, ent_coef and the "
                                    "reward scale; train longer"))
    return findings


def report(run: str | os.PathLike | Mapping[str, Sequence[float]], min_updates: int = 8) -> str:
    """:func:`diagnose` as printable text, one line per finding (or a line saying all looks healthy)."""
    data = read_metrics(run) if isinstance(run, (str, os.PathLike)) else run
    updates = len(_series(data, "train/entropy"))
    if updates < min_updates:
        return f"? too short to judge: {updates} updates (the checklist needs at least {min_updates})"
    findings = diagnose(data, min_updates)
    if not findings:
        return "✓ nothing in the checklist looks wrong"
    return "\n".join(str(f) for f in findings)
