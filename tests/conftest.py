"""Fixtures and helpers shared by the tests.

``lenient_checks`` applies to every test. The plain functions below are imported by the test modules
that need them (``from conftest import assert_caught``), as the bug catalogues do.
"""

import matplotlib
import pytest

# Figures drawn by the Python tests themselves need no screen. (Notebook kernels are separate processes
# and use the inline backend: see figure_checks.py.)
matplotlib.use("Agg")


@pytest.fixture
def tiny_config():
    """A seconds-long LunarLander config (the debug preset) without evaluation noise."""
    from ppo_course import PPOConfig

    return PPOConfig.from_presets(["debug"], env_id="LunarLander-v3")


@pytest.fixture(autouse=True)
def lenient_checks(monkeypatch):
    """`make test` sets PPO_COURSE_STRICT_CHECKS=1 so that a failing check in a solution notebook raises;
    Python tests look at the CheckResult instead (a test that wants strict mode sets it itself)."""
    monkeypatch.delenv("PPO_COURSE_STRICT_CHECKS", raising=False)


def assert_caught(result, phrase):
    """A bug-catalogue verdict: the check failed (not crashed, not passed) and its diagnosis names the bug."""
    assert result.status == "fail", str(result)
    assert phrase in result.message, result.message


def ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
             clip_coef, vf_coef, ent_coef):
    """The learner's ppo_loss from ex04 (the package's, in the exercise's signature). The ex05 tests import
    it as the global ``ppo_loss`` that their update loops call, as the learner's notebook does."""
    from ppo_course import losses

    return losses.ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                           clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef).loss
