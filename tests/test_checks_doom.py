"""The ex06 checks: the references pass (the solution's code and the package's own pieces), stubs say
"not implemented yet", other exceptions name the learner's line, and results are deterministic."""

from collections import deque

import cv2
import gymnasium as gym
import numpy as np
import pytest

from ppo_course.checks import (CheckFailed, check_frame_stacker, check_preprocess_frame, check_shaping_reward)
from ppo_course.envs.doom import AMMO_POOLS, shaping_terms
from ppo_course.envs.doom import preprocess_frame as package_preprocess_frame


# -- reference implementations (the solution notebook's code) -----------------------------------
def preprocess_frame(frame, size=(84, 84)):
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)


class FrameStacker:
    def __init__(self, num_frames=4):
        self.num_frames = num_frames
        self.frames = deque(maxlen=num_frames)

    def reset(self, frame):
        self.frames.clear()
        for _ in range(self.num_frames):
            self.frames.append(frame.copy())
        return np.stack(self.frames)

    def step(self, frame):
        self.frames.append(frame.copy())
        return np.stack(self.frames)


def shaping_reward(names, prev_values, values, max_x, config):
    prev = dict(zip(names, prev_values))
    now = dict(zip(names, values))
    kills = now["KILLCOUNT"] - prev["KILLCOUNT"]
    ammo = sum(now[k] for k in AMMO_POOLS) - sum(prev[k] for k in AMMO_POOLS)
    health = max(now["HEALTH"], 0.0) - max(prev["HEALTH"], 0.0)
    x = now["POSITION_X"]
    terms = {
        "kill": config.kill_reward * max(kills, 0.0),
        "ammo": config.ammo_reward * max(ammo, 0.0) - config.ammo_penalty * max(-ammo, 0.0),
        "health": config.health_gain_scale * max(health, 0.0) - config.health_penalty * max(-health, 0.0),
        "progress": config.progress_scale * max(x - max_x, 0.0),
    }
    return terms, max(max_x, x)


class GymnasiumStacker:
    """Gymnasium's FrameStackObservation driven frame by frame (what the package's make_env uses)."""

    def __init__(self, num_frames=4):
        self.num_frames = num_frames

    def reset(self, frame):
        class Replay(gym.Env):
            observation_space = gym.spaces.Box(0, 255, frame.shape, np.uint8)
            action_space = gym.spaces.Discrete(1)
            next_frame = frame

            def reset(self, *, seed=None, options=None):
                return self.next_frame, {}

            def step(self, action):
                return self.next_frame, 0.0, False, False, {}

        self.inner = Replay()
        self.env = gym.wrappers.FrameStackObservation(self.inner, self.num_frames, padding_type="reset")
        return self.env.reset()[0]

    def step(self, frame):
        self.inner.next_frame = frame.copy()
        return self.env.step(0)[0]


def package_shaping_reward(names, prev_values, values, max_x, config):
    prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
    terms = shaping_terms(prev, now, max_x, config)
    return {k: terms[k] for k in ("kill", "ammo", "health", "progress")}, max(max_x, now["POSITION_X"])


CASES = [(check_preprocess_frame, preprocess_frame), (check_preprocess_frame, package_preprocess_frame),
         (check_frame_stacker, FrameStacker), (check_frame_stacker, GymnasiumStacker),
         (check_shaping_reward, shaping_reward), (check_shaping_reward, package_shaping_reward)]
IDS = ["preprocess_frame", "package_preprocess_frame", "frame_stacker", "gymnasium_frame_stack",
       "shaping_reward", "package_shaping_terms"]


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_reference_passes(check, reference):
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_deterministic(check, reference):
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_prints_a_tick_line(capsys):
    check_shaping_reward(shaping_reward)
    assert capsys.readouterr().out.startswith("✓ shaping_reward:")


def stub_function(*args, **kwargs):
    raise NotImplementedError("read the variables by name")


class StubStacker:
    def __init__(self, num_frames=4):
        raise NotImplementedError("read the variables by name")


@pytest.mark.parametrize("check, stub", [(check_preprocess_frame, stub_function), (check_frame_stacker, StubStacker),
                                         (check_shaping_reward, stub_function)], ids=["preprocess", "stack", "shaping"])
def test_stub_is_todo_with_its_hint(check, stub):
    result = check(stub, quiet=True)
    assert result.status == "todo" and "read the variables by name" in result.message
    assert "not implemented yet" in str(result)


def test_other_exception_is_error_with_the_learners_line():
    def broken(names, prev_values, values, max_x, config):
        now = dict(zip(names, values))
        return {"kill": now["KILLS"]}, max_x  # no such variable

    result = check_shaping_reward(broken, quiet=True)
    assert result.status == "error"
    assert "KeyError" in result.message and 'now["KILLS"]' in result.message


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch):
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")

    def bgr(frame, size=(84, 84)):
        return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (size[1], size[0]), interpolation=cv2.INTER_AREA)

    with pytest.raises(CheckFailed, match="wrong colour order"):
        check_preprocess_frame(bgr, quiet=True)
