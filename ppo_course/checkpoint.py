"""Checkpoints: atomic save, checked load, and the ``latest.pt`` / ``best.pt`` pair of a run.

A checkpoint is one ``torch.save`` dict::

    {"format": 1, "model": state_dict, "optimizer": state_dict, "config": PPOConfig.to_dict(),
     "global_step": int, "update": int, "best_return": float | None,
     "obs_shape": tuple, "n_actions": int (Discrete) or "act_dim": int (Box),
     "rng": {"python", "numpy", "torch", "minibatch"},
     "reward_rms", "obs_rms": {"mean", "var", "count"} (when rewards / observations are normalised),
     "collector": RolloutCollector.state_dict() (written between rollouts: what an exact resume replays)}

An agent trained with ``norm_obs`` also holds the observation statistics in its ``state_dict``
(:class:`~ppo_course.networks.ObsNormalizer`), so the agent ``load_agent`` rebuilds normalises by itself;
``obs_rms`` is the training env's own copy. ``collector`` holds the training environments' episodes in
progress, their wrappers' running state (the normalisers' statistics again, and their per-environment
accumulators) and the LSTM state, so that a resumed run continues exactly as the uninterrupted one
(:mod:`ppo_course.envs.replay`); ``reward_rms``/``obs_rms`` serve readers of the statistics and resuming
from checkpoints written without ``collector``.

It is written to a temporary file in the same folder and moved into place with
``os.replace``, so a crash mid-write never leaves a half-written ``latest.pt``.

A run directory is guarded (:func:`open_run_dir`): a new run refuses a folder that already holds
one unless asked to continue it (resume) or to start over (the old run is moved aside, never
deleted); a lock held for the run's lifetime stops a second process on the same folder; and
temporary files left by a process that died mid-write are removed when the next run starts.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
LATEST = "latest.pt"
BEST = "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit what it is loaded into."""


class RunDirError(CheckpointError):
    """A run directory cannot be used: it holds another run, another process is training in it, or it
    is not a folder."""


#: Files whose presence means a folder holds a run.
RUN_FILES = ("metrics.csv", LATEST, BEST)
LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` (or the process's death).

    It is ``fcntl.flock`` on ``run_dir/.lock``, which the operating system releases when the holder
    exits, however it exits (SIGKILL included), so a dead run never leaves a stale lock. The file
    holds the holder's PID, for the message a second process gets. Where ``fcntl`` does not exist
    (Windows) no lock is taken.

    Raises:
        RunDirError: another process holds the lock (the message names its PID).
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunDirError(f"{run_dir} is in use by another training process (PID {holder}); "
                              "wait for it to finish or choose another --logdir") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None


def holds_run(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` has a metrics file or a checkpoint of an earlier run."""
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def open_run_dir(run_dir: str | os.PathLike, resume: bool = False, restart: bool = False) -> RunLock:
    """Make ``run_dir`` ready for a run and lock it; returns the lock (release it when the run ends).

    * A folder that already holds a run (:func:`holds_run`) is refused unless ``resume`` (continue it)
      or ``restart`` (start over: the old run is moved to ``<run_dir>.old-<date-time>`` beside it,
      nothing is deleted).
    * Temporary files of an atomic write that never finished (``*.tmp``, left by a killed process)
      are removed once the lock is held, so no live writer can own them.

    Raises:
        RunDirError: ``run_dir`` is a file, holds a run and neither flag is given, or is locked by
            another process.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")
    if resume and restart:
        raise RunDirError("--resume continues a run and --restart starts it over: choose one")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    try:
        if holds_run(run_dir) and not resume:
            if not restart:
                raise RunDirError(f"{run_dir} already holds a run; continue it with --resume, or start over "
                                  "with --restart (the old run is kept beside it)")
            aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            for n in range(1, 1000):
                if not aside.exists():
                    break
                aside = aside.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            run_dir.rename(aside)  # the lock (on the folder's .lock file) moves with it: hold it until the new one
            run_dir.mkdir()
            old_lock, lock = lock, RunLock(run_dir)
            old_lock.release()
            print(f"ppo-course: the previous run in {run_dir} was moved to {aside}")
        for stale in run_dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + ``os.replace``). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file does not exist, cannot be read, or is not a ppo-course checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "model" not in payload:
        raise CheckpointError(f"{path} is not a ppo-course checkpoint")
    return payload


def resolve_checkpoint(logdir: str | os.PathLike, checkpoint: str = BEST) -> Path:
    """The checkpoint file for ``logdir`` and a name (``best.pt``, ``latest.pt``) or a path.

    A bare name is looked up inside ``logdir`` (never in the working directory); ``checkpoint`` is
    taken as a path only when it says so, with a folder in it (``./best.pt``, ``/tmp/x.pt``).
    Falls back from a missing ``best.pt`` to ``latest.pt``.

    Raises:
        CheckpointError: the run directory or the checkpoint does not exist.
    """
    candidate = Path(checkpoint)
    if len(candidate.parts) > 1 or candidate.is_absolute():
        if not candidate.is_file():
            raise CheckpointError(f"no checkpoint file {candidate}")
        return candidate
    logdir = Path(logdir)
    if logdir.exists() and not logdir.is_dir():
        raise CheckpointError(f"{logdir} is a file, not a run directory")
    if not logdir.is_dir():
        raise CheckpointError(f"run directory {logdir} does not exist")
    path = logdir / checkpoint
    if not path.is_file() and checkpoint == BEST and (logdir / LATEST).is_file():
        path = logdir / LATEST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint {checkpoint} in {logdir}")
    return path


def rng_state(minibatch_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Python, NumPy, PyTorch (and the minibatch shuffler's) random states, for exact resumption."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if minibatch_rng is not None:
        state["minibatch"] = minibatch_rng.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], minibatch_rng: np.random.Generator | None = None) -> None:
    """Undo :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if minibatch_rng is not None and "minibatch" in state:
        minibatch_rng.bit_generator.state = state["minibatch"]
