"""Exercise checks: run the learner's code against the package's reference and say what is wrong.

Each ``check_*`` function prints one line -- ✓ with what it verified, ✗ with a specific
diagnosis, or "not implemented yet" with the task's hint -- and returns a truthy/falsy
:class:`CheckResult`. See :mod:`ppo_course.checks._core` for the reporting rules.
"""

from . import doom, gae, gaussian, loop, loss, networks, recurrent
from ._core import CheckFailed, CheckResult, Diagnosis, run_check, skip_if_not_implemented, strict_mode
from .doom import *  # noqa: F401,F403  (ex06)
from .gae import *  # noqa: F401,F403  (ex03)
from .gaussian import *  # noqa: F401,F403  (ex08)
from .loop import *  # noqa: F401,F403  (ex05)
from .loss import *  # noqa: F401,F403  (ex04)
from .networks import *  # noqa: F401,F403  (ex01, ex02)
from .recurrent import *  # noqa: F401,F403  (ex07)

__all__ = ["CheckFailed", "CheckResult", "Diagnosis", "run_check", "skip_if_not_implemented", "strict_mode",
           *networks.__all__, *gae.__all__, *loss.__all__, *loop.__all__,
           *doom.__all__, *recurrent.__all__, *gaussian.__all__]
