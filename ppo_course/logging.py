"""Metrics to TensorBoard and to ``metrics.csv``, one row per update.

The names follow CleanRL: ``train/*`` from the update, ``eval/*`` from the
periodic evaluation (blank on rows without one), ``rollout/*`` from training episodes,
``charts/*`` for the learning rate and speed. ``metrics.csv`` is plain CSV, readable with
:func:`read_metrics` (no pandas needed) and plotted by :mod:`ppo_course.viz.plots`.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

#: The columns every metrics.csv starts with, in order. Metrics an environment adds (Doom's
#: ``rollout/kills``, ``eval/max_progress``, ...) become extra columns when they first appear.
METRIC_KEYS: tuple[str, ...] = (
    "global_step",
    "update",
    "time_s",
    "charts/learning_rate",
    "charts/ent_coef",
    "charts/sps",
    "charts/eval_time_s",
    "rollout/episodic_return",
    "rollout/episodic_length",
    "train/policy_loss",
    "train/value_loss",
    "train/entropy",
    "train/approx_kl",
    "train/clip_fraction",
    "train/explained_variance",
    "train/grad_norm",
    "train/epochs_done",
    "eval/mean_return",
    "eval/std_return",
    "eval/success_rate",
    "eval/mean_length",
)

METRICS_FILE = "metrics.csv"


class MetricsLogger:
    """Writes each update's metrics to ``run_dir/metrics.csv`` and (optionally) TensorBoard.

    Args:
        run_dir: the run directory (created if missing).
        tensorboard: also write TensorBoard event files into ``run_dir``.
        resume_step: when resuming, keep only the rows with ``global_step <= resume_step``
            (rows logged after the checkpoint was taken are dropped, so the file stays consistent).
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        kept: list[dict[str, str]] = []
        self.fieldnames = list(METRIC_KEYS)
        if resume_step is not None and self.path.is_file():
            kept = [row for row in _read_rows(self.path) if float(row["global_step"]) <= resume_step]
            self.fieldnames += [k for row in kept for k in row if k not in self.fieldnames]
            self.fieldnames = list(dict.fromkeys(self.fieldnames))
        self._rewrite(kept)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=resume_step)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """(Re)write the whole file with the current columns: at the start, and when a new column appears.

        Atomically: the rows go to a temporary file in the same folder, which then replaces the old file
        (``os.replace``), so a kill mid-rewrite leaves the old file whole; rows are appended from then on.
        """
        if getattr(self, "_file", None) is not None:
            self._file.close()
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.run_dir)
        try:
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fieldnames, restval="")
                writer.writeheader()
                writer.writerows(rows)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._file = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.fieldnames, restval="")

    def log(self, metrics: Mapping[str, float]) -> None:
        """Write one row; ``metrics`` must contain ``global_step``. Missing columns stay blank; a metric seen
        for the first time becomes a new column (the file is rewritten once with the wider header)."""
        step = int(metrics["global_step"])
        new = [k for k in metrics if k not in self.fieldnames]
        if new:
            self._file.flush()
            rows = _read_rows(self.path)
            self.fieldnames += new
            self._rewrite(rows)
        self._csv.writerow({k: _fmt(v) for k, v in metrics.items()})
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                if "/" in key and value is not None and math.isfinite(float(value)):
                    self._writer.add_scalar(key, float(value), step)

    def add_text(self, tag: str, text: str) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, text)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_metrics(path: str | os.PathLike) -> dict[str, list[float]]:
    """Read ``metrics.csv`` (or a run directory containing it) into ``{column: [values]}``.

    Blank cells become NaN, so every column has one value per update row.

    Raises:
        FileNotFoundError: no metrics file there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} at {path}")
    rows = _read_rows(path)
    columns = list(rows[0].keys()) if rows else list(METRIC_KEYS)
    return {c: [float(r[c]) if r.get(c) not in (None, "") else math.nan for r in rows] for c in columns}
