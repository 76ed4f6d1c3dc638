"""Small pretrained checkpoints shipped with the package (see README.md here for how each was made)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent

#: name -> file; each is a normal ppo-course checkpoint (load with ppo_course.load_agent).
PRETRAINED = {"lunar_lander": "lunar_lander.pt", "lunar_lander_continuous": "lunar_lander_continuous.pt",
              "doom_basic": "doom_basic.pt"}


def pretrained_path(name: str = "lunar_lander") -> Path:
    """Path of a shipped checkpoint.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in PRETRAINED:
        raise KeyError(f"no pretrained checkpoint {name!r}; available: {', '.join(PRETRAINED)}")
    return ASSETS / PRETRAINED[name]
