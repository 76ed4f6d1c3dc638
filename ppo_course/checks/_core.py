"""What every exercise check shares: running the learner's code safely and reporting one clear line.

A check is a function ``check_xxx(learner_fn_or_class) -> CheckResult``. Its body compares the
learner's code with the package's reference on several cases and either returns a short
description of what it verified, or raises :class:`Diagnosis` with *one* specific, friendly
explanation of the most likely mistake. :func:`run_check` turns that into what the learner sees:

* ``✓ <task>: <what was verified>``
* ``✗ <task>: <diagnosis>``
* ``… <task>: not implemented yet — <hint>`` when the stub still raises ``NotImplementedError``
  (the notebook keeps running);
* ``✗ <task>: your code raised ValueError: ... (line 12: x = y.view(-1, 4))`` for any other
  exception -- the learner's own line, not a wall of traceback.

In strict mode (``PPO_COURSE_STRICT_CHECKS=1``, set by ``make test``) a failed check also raises
:class:`CheckFailed`, so that nbval notices a solution notebook whose check does not pass.
"Not implemented yet" never raises: the generated exercise notebooks must run to the end.
"""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

STRICT_ENV = "PPO_COURSE_STRICT_CHECKS"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # ppo_course/


class Diagnosis(Exception):
    """Raised inside a check body: the message is the one-line diagnosis shown to the learner."""


class CheckFailed(AssertionError):
    """Raised by a failed check in strict mode (``PPO_COURSE_STRICT_CHECKS=1``)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; truthy when it passed.

    Attributes:
        task: the task's name as shown to the learner, e.g. ``"compute_gae"``.
        status: ``"pass"``, ``"fail"`` (a diagnosis), ``"error"`` (the learner's code raised),
            or ``"todo"`` (still ``NotImplementedError``).
        message: what was verified (pass) or what is wrong (otherwise).
    """

    task: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == "pass"

    def _ipython_display_(self) -> None:
        """A check cell ends with the check's call; its line was printed already, so Jupyter shows nothing more."""

    def __str__(self) -> str:
        mark = {"pass": "✓", "todo": "…"}.get(self.status, "✗")
        if self.status == "todo":
            return f"{mark} {self.task}: not implemented yet — {self.message}"
        return f"{mark} {self.task}: {self.message}"


def strict_mode() -> bool:
    """True when ``PPO_COURSE_STRICT_CHECKS`` is set to something other than ``""``/``"0"``."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _is_library_frame(filename: str) -> bool:
    path = filename.replace("\\", "/")
    return (path.startswith(str(_PACKAGE_DIR).replace("\\", "/")) or "/site-packages/" in path
            or "/dist-packages/" in path or path.startswith("<frozen"))


def learner_line(exc: BaseException) -> str | None:
    """``"line N: <source>"`` of the innermost traceback frame that is the learner's code (not
    this package, not an installed library), or None when there is none."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not _is_library_frame(frame.filename):
            source = (frame.line or "").strip()
            return f"line {frame.lineno}: {source}" if source else f"line {frame.lineno} of {frame.name}"
    return None


def run_check(task: str, body: Callable[[], str], hint: str = "", quiet: bool = False) -> CheckResult:
    """Run one check body and report it.

    Args:
        task: the task name shown to the learner.
        body: no-argument function that exercises the learner's code; returns what it verified
            or raises :class:`Diagnosis`.
        hint: shown with "not implemented yet" when the stub's ``NotImplementedError`` has no message.
        quiet: do not print (tests use it).

    Returns:
        The :class:`CheckResult` (also printed unless ``quiet``).

    Raises:
        CheckFailed: the check failed and strict mode is on.
    """
    try:
        result = CheckResult(task, "pass", body())
    except NotImplementedError as exc:
        result = CheckResult(task, "todo", str(exc) or hint or "fill in the cell marked 'your code here'")
    except Diagnosis as exc:
        result = CheckResult(task, "fail", str(exc))
    except Exception as exc:  # the learner's code broke: say how and where, briefly
        where = learner_line(exc)
        message = f"your code raised {type(exc).__name__}: {exc}"
        result = CheckResult(task, "error", message + (f" ({where})" if where else ""))
    if not quiet:
        print(result, file=sys.stdout)
    if not result and result.status != "todo" and strict_mode():
        raise CheckFailed(str(result))
    return result


# --------------------------------------------------------------------------------------------
# small helpers the check modules share
# --------------------------------------------------------------------------------------------
def require_signature(fn, signature: str, *args, **kwargs) -> None:
    """Raise a :class:`Diagnosis` unless ``fn`` accepts ``fn(*args, **kwargs)``, keyword names included (the checks
    pass optional arguments by name); ``signature`` is the contract's, quoted in the message. A callable whose
    signature Python cannot read passes."""
    try:
        bound = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        bound.bind(*args, **kwargs)
    except TypeError as exc:
        raise Diagnosis(f"keep the signature {signature} ({exc})") from None


def fmt(t, digits: int = 3, significant: bool = False) -> str:
    """``[0.5, -1.25, 3]``: the values of a tensor (or number) in one short line for a message.

    Each value is rounded to ``digits`` decimals (``significant=False``) or to ``digits``
    significant digits (``significant=True``), then written with ``:g``.
    """
    values = torch.as_tensor(t).detach().flatten()
    if significant:
        return "[" + ", ".join(f"{float(x):.{digits}g}" for x in values) + "]"
    return "[" + ", ".join(f"{round(float(x), digits):g}" for x in values) + "]"


def close(a, b, atol: float = 1e-4, rtol: float = 1e-4, *, dtype: torch.dtype | None = torch.float32,
          finite: bool = False) -> bool:
    """True when ``a`` and ``b`` have the same shape and ``torch.allclose(a, b, rtol, atol)`` holds.

    Args:
        dtype: both are converted to it first (``None``: compared as they are).
        finite: also require every value of ``a`` to be finite (``allclose`` takes inf == inf).
    """
    a, b = torch.as_tensor(a, dtype=dtype).detach(), torch.as_tensor(b, dtype=dtype).detach()
    if a.shape != b.shape or (finite and not bool(torch.isfinite(a).all())):
        return False
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def expect_tensor(x, name: str) -> torch.Tensor:
    """``x`` itself, or a diagnosis when the learner's code returned something other than a tensor."""
    if not isinstance(x, torch.Tensor):
        raise Diagnosis(f"{name} should be a torch.Tensor, got {type(x).__name__}")
    return x


def raise_if_modified(pairs: Iterable[tuple], message: str) -> None:
    """Raise ``Diagnosis(message.format(name=name))`` for the first ``(after, before, name)`` whose
    tensor or array no longer equals the copy taken before the learner's code ran."""
    for after, before, name in pairs:
        same = np.array_equal(after, before) if isinstance(after, np.ndarray) else torch.equal(after, before)
        if not same:
            raise Diagnosis(message.format(name=name))


def flags(shape: tuple[int, ...], positions: Iterable[tuple[int, ...]]) -> torch.Tensor:
    """A float32 tensor of zeros with 1.0 at each of ``positions`` (episode ends or starts)."""
    out = torch.zeros(shape)
    for index in positions:
        out[index] = 1.0
    return out


class skip_if_not_implemented:
    """Context manager for notebook cells that *use* the learner's code outside a check (a plot, a
    training run): while a stub still raises ``NotImplementedError``, the cell prints one line and
    the notebook goes on instead of stopping::

        with skip_if_not_implemented("the GAE plot"):
            plot_gae(compute_gae(...))
    """

    def __init__(self, what: str = "this cell"):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, NotImplementedError):
            print(f"… skipped {self.what}: a function it uses is not implemented yet — {exc}")
            return True
        return False
