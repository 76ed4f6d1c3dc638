"""``ppo-course doctor``: is this machine ready for the course? One line per check, ✓ or ✗ with the fix
(ℹ for information that is neither, such as whether there is a GPU)."""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass
from typing import Callable

INSTALL_HINT = "pip install -e '.[course]' (or: make lab)"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
    info: bool = False  #: a fact about the machine, not a pass or a failure

    def line(self) -> str:
        mark = "ℹ" if self.info else "✓" if self.ok else "✗"
        text = f"{mark} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" — fix: {self.fix}"
        if not self.ok and not self.required:
            text += " (optional)"
        return text


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:
        return None


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None


def _check_lunar() -> Check:
    try:
        from .envs import make_env

        env = make_env("LunarLander-v3", render_mode="rgb_array")
        env.reset(seed=0)
        frame = env.render()
        env.close()
        return Check("LunarLander-v3", True, f"created and rendered headless, frame {frame.shape}")
    except Exception as exc:
        return Check("LunarLander-v3", False, f"{type(exc).__name__}: {exc}",
                     "pip install 'gymnasium[box2d]>=1.1'")


def _check_vizdoom() -> Check:
    try:
        import os

        import vizdoom as vzd

        from .envs.doom import start_game

        game = vzd.DoomGame()
        game.load_config(os.path.join(vzd.scenarios_path, "basic.cfg"))
        game.set_window_visible(False)
        game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)
        start_game(game)
        game.new_episode()
        shape = game.get_state().screen_buffer.shape
        game.close()
        return Check("ViZDoom basic scenario", True, f"created and rendered headless, frame {shape}", required=False)
    except ImportError:
        return Check("ViZDoom basic scenario", False, "vizdoom is not installed",
                     "pip install -e '.[doom]' (needed from notebook 09 on)", required=False)
    except Exception as exc:
        return Check("ViZDoom basic scenario", False, f"{type(exc).__name__}: {exc}",
                     "reinstall vizdoom: pip install --force-reinstall vizdoom", required=False)


def run_checks() -> list[Check]:
    """All checks, in the order they are printed."""
    checks: list[Check] = []
    py = sys.version_info
    checks.append(Check("Python", (3, 10) <= py[:2] <= (3, 12), platform.python_version(),
                        "use Python 3.10, 3.11 or 3.12"))
    for name, module, fix, required in (
        ("PyTorch", "torch", "pip install torch", True),
        ("Gymnasium", "gymnasium", "pip install 'gymnasium[box2d]>=1.1'", True),
        ("Box2D", "Box2D", "pip install 'gymnasium[box2d]>=1.1'", True),
        ("ViZDoom", "vizdoom", "pip install -e '.[doom]'", False),
    ):
        version = _version(module)
        checks.append(Check(name, version is not None, version or "not installed", fix, required))
    try:
        import gymnasium

        major_minor = tuple(int(p) for p in gymnasium.__version__.split(".")[:2])
        if major_minor < (1, 1):
            checks[2] = Check("Gymnasium", False, gymnasium.__version__, "pip install -U 'gymnasium[box2d]>=1.1'")
    except Exception:
        pass
    try:
        import torch

        detail = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else
                  "none visible; the whole course runs on the CPU (a GPU only speeds up Doom's convolutional network)")
        checks.append(Check("GPU", True, detail, info=True))
    except Exception:
        pass
    checks.append(_check_lunar())
    checks.append(_check_vizdoom())
    colab = in_colab()
    checks.append(Check("Colab", True, "running inside Google Colab" if colab else "not in Colab (local run)"))
    return checks


def doctor(print_fn: Callable[[str], None] = print) -> bool:
    """Print every check; return True when all required checks pass."""
    checks = run_checks()
    for check in checks:
        print_fn(check.line())
    ok = all(c.ok for c in checks if c.required)
    print_fn("all required checks passed" if ok else "some required checks failed: see the fixes above")
    return ok
