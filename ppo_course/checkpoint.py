"""Checkpoints: atomic save, checked load, and the ``latest.pt`` / ``best.pt`` pair of a run.

A checkpoint is one ``torch.save`` dict::

    {"format": 1, "model": state_dict, "optimizer": state_dict, "config": PPOConfig.to_dict(),
     "global_step": int, "update": int, "best_return": float | None,
     "obs_shape": tuple, "n_actions": int, "rng": {"python", "numpy", "torch", "minibatch"}}

It is written to a temporary file in the same folder and moved into place with
``os.replace``, so a crash mid-write never leaves a half-written ``latest.pt``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
LATEST = "latest.pt"
BEST = "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit what it is loaded into."""


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

    Falls back from a missing ``best.pt`` to ``latest.pt``.

    Raises:
        CheckpointError: the run directory or the checkpoint does not exist.
    """
    candidate = Path(checkpoint)
    if candidate.is_file():
        return candidate
    logdir = Path(logdir)
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
