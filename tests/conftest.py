import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tiny_config():
    """A seconds-long LunarLander config (the debug preset) without evaluation noise."""
    from ppo_course import PPOConfig

    return PPOConfig.from_presets(["debug"], env_id="LunarLander-v3")
