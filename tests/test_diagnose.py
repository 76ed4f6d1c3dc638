"""diagnose() on synthetic metric files, one per symptom of the debugging checklist, and on a healthy run."""

import csv

import numpy as np
import pytest

from ppo_course.diagnose import diagnose, report
from ppo_course.logging import METRIC_KEYS

N = 40


def healthy(n=N):
    t = np.linspace(0, 1, n)
    return {
        "global_step": (np.arange(n) + 1) * 2048.0,
        "train/entropy": 1.38 - 0.6 * t,
        "train/approx_kl": np.full(n, 0.01),
        "train/clip_fraction": np.full(n, 0.12),
        "train/explained_variance": 0.2 + 0.7 * t,
        "train/value_loss": 50 * np.exp(-2 * t),
        "rollout/episodic_return": -200 + 450 * t,
    }


def write(tmp_path, data):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_KEYS, extrasaction="ignore")
        writer.writeheader()
        for i in range(len(data["global_step"])):
            writer.writerow({k: v[i] for k, v in data.items()})
    return tmp_path


def test_healthy_run_has_no_findings(tmp_path):
    assert diagnose(write(tmp_path, healthy())) == []
    assert report(write(tmp_path, healthy())).startswith("✓")


@pytest.mark.parametrize("symptom, change", [
    ("entropy collapsed early", {"train/entropy": np.r_[1.38, np.full(N - 1, 0.05)]}),
    ("approx-KL too high", {"train/approx_kl": np.full(N, 0.2)}),
    ("approx-KL too low", {"train/approx_kl": np.full(N, 1e-6)}),
    ("clip fraction too high", {"train/clip_fraction": np.full(N, 0.6)}),
    ("clip fraction too low", {"train/clip_fraction": np.full(N, 0.0)}),
    ("critic not learning", {"train/explained_variance": np.full(N, -0.3)}),
    ("value loss diverging", {"train/value_loss": np.exp(np.linspace(0, 6, N))}),
    ("flat returns", {"rollout/episodic_return": np.random.default_rng(0).normal(-150, 30, N)}),
])
def test_each_symptom_is_named_with_its_fix(tmp_path, symptom, change):
    data = {**healthy(), **change}
    findings = diagnose(write(tmp_path, data))
    assert [f.symptom for f in findings] == [symptom]
    assert "Try:" in str(findings[0]) and findings[0].fix


def test_a_short_run_is_not_judged():
    assert diagnose(healthy(4)) == []


def test_report_says_when_a_run_is_too_short():
    assert report(healthy(4)).startswith("? too short to judge: 4 updates")


def annealed(n=N):
    """A healthy run whose learning rate anneals linearly to 0, and whose clip fraction and KL shrink with it."""
    data = healthy(n)
    lr = 3e-4 * (1 - np.arange(n) / n)
    data["charts/learning_rate"] = lr
    data["train/clip_fraction"] = 0.12 * lr / lr[0]
    data["train/approx_kl"] = 0.01 * (lr / lr[0]) ** 2
    return data


def test_an_annealed_run_is_not_called_too_quiet_for_its_quiet_end():
    data = annealed()
    late_clip = np.median(data["train/clip_fraction"][N // 2:])
    assert late_clip < 0.05  # the plain late median would be judged against 0.02 ...
    assert diagnose(data) == []  # ... but only the updates with lr >= 25 % of its start are


def test_a_run_that_never_clips_is_still_too_quiet_when_annealed():
    data = {**annealed(), "train/clip_fraction": np.zeros(N)}
    assert [f.symptom for f in diagnose(data)] == ["clip fraction too low"]


def test_kl_spikes_are_named_even_when_the_median_is_healthy():
    kl = np.full(N, 0.01)
    kl[[5, 17, 30]] = [0.15, 0.57, 0.2]
    findings = diagnose({**healthy(), "train/approx_kl": kl})
    assert [f.symptom for f in findings] == ["approx-KL spikes"]
    assert "3 update(s)" in findings[0].evidence and "max 0.57 at step 36864" in findings[0].evidence
