"""Bug catalogue, ex06: realistic broken frame preprocessing, frame stacking and reward shaping, each
caught by its check with its specific diagnosis (selected by ``pytest -k bug``)."""

import cv2
import numpy as np

from ppo_course.checks import check_frame_stacker, check_preprocess_frame, check_shaping_reward
from ppo_course.envs.doom import AMMO_POOLS

from conftest import assert_caught
from test_checks_doom import FrameStacker as GoodStacker  # the solution's, base of most broken ones below


# -- ex06 task 1: preprocess_frame --------------------------------------------------------------
def test_bug_preprocess_bgr_colour_order():
    def preprocess_frame(frame, size=(84, 84)):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # OpenCV habit; the screen is RGB
        return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "wrong colour order")


def test_bug_preprocess_float_scaled_to_unit_range():
    def preprocess_frame(frame, size=(84, 84)):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "scaled to [0, 1]")


def test_bug_preprocess_nearest_neighbour_resize():
    def preprocess_frame(frame, size=(84, 84)):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "nearest-neighbour resize")


def test_bug_preprocess_default_bilinear_resize():
    def preprocess_frame(frame, size=(84, 84)):
        return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (size[1], size[0]))

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "bilinear resize")


def test_bug_preprocess_dsize_as_height_width():
    def preprocess_frame(frame, size=(84, 84)):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)  # cv2 wants (width, height)

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "takes dsize as (width, height)")


def test_bug_preprocess_keeps_colour_channels():
    def preprocess_frame(frame, size=(84, 84)):
        return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "still has 3 colour channels")


def test_bug_preprocess_channel_mean():
    def preprocess_frame(frame, size=(84, 84)):
        gray = frame.mean(axis=2).astype(np.uint8)
        return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "plain mean of R, G and B")


def test_bug_preprocess_transposed():
    def preprocess_frame(frame, size=(84, 84)):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).T  # "channels-first" habit: swapped the image axes
        return cv2.resize(gray, (size[0], size[1]), interpolation=cv2.INTER_AREA)

    assert_caught(check_preprocess_frame(preprocess_frame, quiet=True), "transposed")


# -- ex06 task 2: FrameStacker ------------------------------------------------------------------
def test_bug_stack_newest_frame_first():
    class FrameStacker(GoodStacker):
        def step(self, frame):
            self.frames.append(frame.copy())
            return np.stack(self.frames)[::-1]

    assert_caught(check_frame_stacker(FrameStacker, quiet=True), "newest frame first")


def test_bug_stack_memory_leaking_across_episodes():
    class FrameStacker(GoodStacker):
        def reset(self, frame):
            if not self.frames:  # only filled the first time: later episodes start with old frames
                self.frames.extend(frame.copy() for _ in range(self.num_frames))
            else:
                self.frames.append(frame.copy())
            return np.stack(self.frames)

    assert_caught(check_frame_stacker(FrameStacker, quiet=True), "memory leaking across episodes")


def test_bug_stack_zeros_at_reset():
    class FrameStacker(GoodStacker):
        def reset(self, frame):
            self.frames.extend(np.zeros_like(frame) for _ in range(self.num_frames - 1))
            self.frames.append(frame.copy())
            return np.stack(self.frames)

    assert_caught(check_frame_stacker(FrameStacker, quiet=True), "reset pads with zeros")


def test_bug_stack_channels_last():
    class FrameStacker(GoodStacker):
        def reset(self, frame):
            super().reset(frame)
            return np.stack(self.frames, axis=-1)

        def step(self, frame):
            super().step(frame)
            return np.stack(self.frames, axis=-1)

    assert_caught(check_frame_stacker(FrameStacker, quiet=True), "channels-last")


def test_bug_stack_slots_share_one_array():
    class FrameStacker:
        def __init__(self, num_frames=4):
            self.num_frames = num_frames

        def reset(self, frame):
            self.slots = [frame.copy()] * self.num_frames  # one array, num_frames references
            return np.stack(self.slots)

        def step(self, frame):
            for i in range(self.num_frames - 1):
                self.slots[i][:] = self.slots[i + 1]
            self.slots[-1][:] = frame
            return np.stack(self.slots)

    assert_caught(check_frame_stacker(FrameStacker, quiet=True), "are one and the same array")


def test_bug_stack_returns_its_internal_buffer():
    class FrameStacker:
        def __init__(self, num_frames=4):
            self.num_frames = num_frames

        def reset(self, frame):
            self.stack = np.repeat(frame[None], self.num_frames, axis=0)
            return self.stack

        def step(self, frame):
            self.stack[:-1] = self.stack[1:]
            self.stack[-1] = frame
            return self.stack  # the same array every time: earlier observations change

    assert_caught(check_frame_stacker(FrameStacker, quiet=True), "you return your internal buffer")


# -- ex06 task 3: shaping_reward ------------------------------------------------------------------
def terms_from(prev, now, max_x, config, progress=None, kills=None, ammo=None, health=None):
    """The correct terms from two name -> value dicts, with any term replaced by a broken one."""
    k = now["KILLCOUNT"] - prev["KILLCOUNT"]
    a = sum(now[p] for p in AMMO_POOLS) - sum(prev[p] for p in AMMO_POOLS)
    h = max(now["HEALTH"], 0.0) - max(prev["HEALTH"], 0.0)
    terms = {
        "kill": config.kill_reward * max(k, 0.0) if kills is None else kills,
        "ammo": config.ammo_reward * max(a, 0.0) - config.ammo_penalty * max(-a, 0.0) if ammo is None else ammo,
        "health": (config.health_gain_scale * max(h, 0.0) - config.health_penalty * max(-h, 0.0)
                   if health is None else health),
        "progress": config.progress_scale * max(now["POSITION_X"] - max_x, 0.0) if progress is None else progress,
    }
    return terms, max(max_x, now["POSITION_X"])


def test_bug_shaping_reward_for_revisited_positions():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        dx = now["POSITION_X"] - prev["POSITION_X"]  # pays every step forward, even over old ground
        return terms_from(prev, now, max_x, config, progress=config.progress_scale * max(dx, 0.0))

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "reward for revisited positions")


def test_bug_shaping_hard_coded_variable_index():
    def shaping_reward(names, prev_values, values, max_x, config):
        KILLCOUNT, HEALTH, POSITION_X = 0, 1, 2  # "the order I registered them in"
        prev = {"KILLCOUNT": prev_values[KILLCOUNT], "HEALTH": prev_values[HEALTH],
                "POSITION_X": prev_values[POSITION_X], **{p: prev_values[names.index(p)] for p in AMMO_POOLS}}
        now = {"KILLCOUNT": values[KILLCOUNT], "HEALTH": values[HEALTH],
               "POSITION_X": values[POSITION_X], **{p: values[names.index(p)] for p in AMMO_POOLS}}
        return terms_from(prev, now, max_x, config)

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "hard-coded variable index")


def test_bug_shaping_ammo_from_one_slot_only():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        a = now["AMMO2"] - prev["AMMO2"]  # bullets only: shells, rockets and cells are free
        return terms_from(prev, now, max_x, config,
                          ammo=config.ammo_reward * max(a, 0.0) - config.ammo_penalty * max(-a, 0.0))

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "ammo from one slot only")


def test_bug_shaping_switching_weapons_penalised():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        a = now["SELECTED_WEAPON_AMMO"] - prev["SELECTED_WEAPON_AMMO"]
        return terms_from(prev, now, max_x, config,
                          ammo=config.ammo_reward * max(a, 0.0) - config.ammo_penalty * max(-a, 0.0))

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "switching weapons is penalised")


def test_bug_shaping_every_ammo_slot_counted():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        slots = [n for n in names if n.startswith("AMMO")]  # AMMO4 shares the bullet pool with AMMO2
        a = sum(now[s] for s in slots) - sum(prev[s] for s in slots)
        return terms_from(prev, now, max_x, config,
                          ammo=config.ammo_reward * max(a, 0.0) - config.ammo_penalty * max(-a, 0.0))

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "each bullet counts twice")


def test_bug_shaping_health_gain_and_loss_same_sign():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        h = max(now["HEALTH"], 0.0) - max(prev["HEALTH"], 0.0)
        return terms_from(prev, now, max_x, config, health=-config.health_penalty * abs(h))

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "health gain and loss with the same sign")


def test_bug_shaping_kill_reward_on_cumulative_count():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        return terms_from(prev, now, max_x, config, kills=config.kill_reward * now["KILLCOUNT"])

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "kill reward on the cumulative count")


def test_bug_shaping_health_not_clamped_at_zero():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        h = now["HEALTH"] - prev["HEALTH"]
        return terms_from(prev, now, max_x, config,
                          health=config.health_gain_scale * max(h, 0.0) - config.health_penalty * max(-h, 0.0))

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "clamp health at 0")


def test_bug_shaping_max_x_never_updated():
    def shaping_reward(names, prev_values, values, max_x, config):
        prev, now = dict(zip(names, prev_values)), dict(zip(names, values))
        return terms_from(prev, now, max_x, config)[0], max_x

    assert_caught(check_shaping_reward(shaping_reward, quiet=True), "new_max_x stays")
