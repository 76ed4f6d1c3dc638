"""Schedules against hand-computed values."""

import pytest

from ppo_course.schedules import annealed_lr, entropy_coef, linear_schedule


def test_linear_schedule():
    assert linear_schedule(1.0, 0.0, 0, 100) == 1.0
    assert linear_schedule(1.0, 0.0, 25, 100) == pytest.approx(0.75)
    assert linear_schedule(1.0, 0.0, 150, 100) == 0.0  # clamped past the end


def test_annealed_lr():
    assert annealed_lr(3e-4, 50, 100) == pytest.approx(1.5e-4)
    assert annealed_lr(3e-4, 50, 100, anneal=False) == 3e-4


def test_entropy_constant_linear_and_warmup_then_decay():
    assert entropy_coef(70, 100, start=0.01) == 0.01
    assert entropy_coef(50, 100, start=0.02, final=0.0) == pytest.approx(0.01)  # plain linear
    # warm-up: held for 40 steps, then linear over the remaining 60
    assert entropy_coef(39, 100, start=0.05, final=0.01, warmup_steps=40) == 0.05
    assert entropy_coef(70, 100, start=0.05, final=0.01, warmup_steps=40) == pytest.approx(0.03)
    assert entropy_coef(100, 100, start=0.05, final=0.01, warmup_steps=40) == pytest.approx(0.01)
