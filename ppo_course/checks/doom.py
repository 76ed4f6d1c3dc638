"""Checks for ex06 (Doom observations and reward shaping).

The learner's code is compared with the package's own pieces on hand-made inputs (no game is
started, so every check takes milliseconds):

* ``preprocess_frame`` with :func:`ppo_course.envs.doom.preprocess_frame` (grayscale with OpenCV's
  ITU-R 601 weights, ``INTER_AREA`` resize) on seeded colour screens of several sizes, within one
  grey level;
* ``FrameStacker`` with Gymnasium's ``FrameStackObservation(padding_type="reset")`` -- the wrapper
  :func:`ppo_course.envs.doom.make_env` uses -- replaying the same frames over two episodes;
* ``shaping_reward`` with :func:`ppo_course.envs.doom.shaping_terms` on hand deltas (a kill, a
  medkit, a shotgun shell, walking back over old ground, switching weapons, a killing blow), with
  the game variables registered in different orders.

When a result differs, the check tries the usual mistakes one by one (BGR weights, nearest
resize, newest frame first, a stack that survives reset, progress paid for revisited ground, a
hard-coded variable index, ...) and names the first that reproduces the learner's output.
"""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ppo_course.envs.doom import AMMO_POOLS, DoomConfig
from ppo_course.envs.doom import preprocess_frame as _reference_preprocess
from ppo_course.envs.doom import shaping_terms as _reference_shaping_terms

from ._core import Diagnosis, raise_if_modified, run_check

__all__ = ["check_preprocess_frame", "check_frame_stacker", "check_shaping_reward", "SHAPING_TERMS_EX06"]

#: The terms ``shaping_reward`` returns (a subset of :data:`ppo_course.envs.doom.SHAPING_TERMS`).
SHAPING_TERMS_EX06: tuple[str, ...] = ("kill", "ammo", "health", "progress")


# ============================================================================================
# ex06 task 1: preprocess_frame
# ============================================================================================
def _screen(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded (H, W, 3) uint8 RGB screen: saturated colour blocks (so that the channel order and
    the grey weights show), a smooth gradient and fine noise (so that the resize method shows)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    third, two_thirds = height // 3, 2 * height // 3
    img[:third, : width // 3] = (230, 20, 20)  # red block: RGB vs BGR weights differ most
    img[:third, width // 3: 2 * width // 3] = (20, 20, 230)  # blue block
    img[third:two_thirds, :, 1] = np.linspace(0, 255, width).astype(np.uint8)  # a smooth green gradient
    img[two_thirds:, ::2] = 255 - img[two_thirds:, ::2]  # stripes: aliasing for nearest resize
    return img


def _variants(frame: np.ndarray, size: tuple[int, int]) -> list[tuple[np.ndarray, str]]:
    """The usual mistakes as (output, diagnosis) pairs, most specific first."""
    h, w = size
    rgb2gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    bgr2gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    mean = frame.mean(axis=2).round().clip(0, 255).astype(np.uint8)
    area = lambda g: cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)  # noqa: E731
    return [
        (area(bgr2gray), "wrong colour order: the grey level weights blue as if it were red. The screen is RGB "
                         "(ViZDoom's RGB24; OpenCV's own images are BGR), so convert with cv2.COLOR_RGB2GRAY, not "
                         "COLOR_BGR2GRAY"),
        (area(mean), "grey = the plain mean of R, G and B; use the luminance weights of cv2.cvtColor(frame, "
                     "cv2.COLOR_RGB2GRAY) (0.299 R + 0.587 G + 0.114 B), as the package does"),
        (cv2.resize(rgb2gray, (w, h), interpolation=cv2.INTER_NEAREST),
         "nearest-neighbour resize: each output pixel copies one source pixel, so thin things (a distant monster) "
         "flicker in and out (aliasing); resize with interpolation=cv2.INTER_AREA, which averages the pixels "
         "under each output pixel"),
        (cv2.resize(rgb2gray, (w, h), interpolation=cv2.INTER_LINEAR),
         "bilinear resize (cv2.resize's default) samples only a few source pixels when shrinking by ~2x and "
         "aliases; pass interpolation=cv2.INTER_AREA"),
        (cv2.resize(rgb2gray, (w, h), interpolation=cv2.INTER_CUBIC),
         "bicubic resize; pass interpolation=cv2.INTER_AREA, which averages the pixels under each output pixel"),
    ]


#: ((H, W) of the screen, size, seed, name): the screens preprocess_frame is checked on.
_PREPROCESS_CASES = [((120, 160), (84, 84), 1, "a 160x120 screen (ViZDoom's RES_160X120)"),
                     ((240, 320), (84, 84), 2, "a 320x240 screen"),
                     ((100, 130), (84, 84), 3, "a 130x100 screen"),
                     ((84, 84), (84, 84), 4, "an 84x84 screen (nothing to resize)"),
                     ((120, 160), (60, 80), 5, "a 160x120 screen resized to size=(60, 80)")]


def _check_frame_format(out, size: tuple[int, int], name: str) -> None:
    """The result is a (height, width) uint8 NumPy array."""
    h, w = size
    if hasattr(out, "detach") and hasattr(out, "numpy"):
        raise Diagnosis("return a NumPy array (the env hands NumPy observations to Gymnasium); "
                        "got a torch tensor")
    if not isinstance(out, np.ndarray):
        raise Diagnosis(f"return a NumPy array, got {type(out).__name__}")
    if np.issubdtype(out.dtype, np.floating):
        if out.size and float(np.nanmax(out)) <= 1.0:
            raise Diagnosis(f"the frame is scaled to [0, 1] ({out.dtype}); keep uint8 grey levels 0..255: "
                            "the network divides by 255 on the way in, and uint8 frames take 4x less "
                            "rollout memory than float32")
        raise Diagnosis(f"the frame is {out.dtype}; return uint8 (e.g. cv2 keeps the input's uint8): "
                        "observations are stored as uint8, 4x less memory than float32")
    if out.dtype != np.uint8:
        raise Diagnosis(f"the frame should be uint8, got {out.dtype}")
    if out.ndim == 3 and 3 in (out.shape[0], out.shape[-1]):
        raise Diagnosis(f"the result {out.shape} still has 3 colour channels: convert to grayscale "
                        "with cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) before resizing")
    if out.ndim == 3 and 1 in (out.shape[0], out.shape[-1]) and out.size == h * w:
        raise Diagnosis(f"the result has shape {out.shape}; return a 2-D (height, width) = {size} frame "
                        "(the frame stack adds the channel axis later)")
    if out.shape == (w, h) and h != w:
        raise Diagnosis(f"for size=(height, width) = {size} the result has shape {out.shape}: cv2.resize "
                        f"takes dsize as (width, height), so pass (size[1], size[0]) = ({w}, {h})")
    if out.shape != (h, w):
        raise Diagnosis(f"for {name} with size = {size} the result has shape {out.shape}; expected {(h, w)}")


def _compare_frames(out: np.ndarray, expected: np.ndarray, frame: np.ndarray, size: tuple[int, int],
                    name: str) -> None:
    """Within one grey level of the reference; otherwise the usual mistake that reproduces ``out``."""
    h, w = size
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    if int(diff.max()) <= 1:
        return
    if h == w and int(np.abs(out.T.astype(np.int16) - expected).max()) <= 1:
        raise Diagnosis("the frame is transposed (rows are the screen's columns): a NumPy image is "
                        "(height, width); don't swap the axes")
    for variant, message in _variants(frame, size):
        if int(np.abs(out.astype(np.int16) - variant.astype(np.int16)).max()) <= 1:
            raise Diagnosis(message)
    r, c = np.unravel_index(int(diff.argmax()), diff.shape)
    raise Diagnosis(f"for {name}, pixel ({r}, {c}) should be {int(expected[r, c])} but is {int(out[r, c])} "
                    f"({int((diff > 1).sum())} of {diff.size} pixels differ by more than 1 grey level); "
                    "grayscale with cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), then cv2.resize(gray, (width, "
                    "height), interpolation=cv2.INTER_AREA)")


def check_preprocess_frame(preprocess_frame, quiet: bool = False):
    """Check ``preprocess_frame(frame, size=(84, 84)) -> (height, width) uint8``.

    Contract: ``frame`` is one ``(H, W, 3)`` uint8 RGB screen (ViZDoom's RGB24 format); ``size`` is
    ``(height, width)``; the result is the grayscale frame resized to ``size``, ``uint8`` in 0..255
    (the network scales to [0, 1], not this function), a new array (the input is left unchanged).
    Compared with :func:`ppo_course.envs.doom.preprocess_frame` (``cv2.cvtColor(RGB2GRAY)`` then
    ``cv2.resize(..., INTER_AREA)``) within one grey level on a 160x120 screen, a 320x240 one, an
    odd 130x100 one, an 84x84 one (no resize) and a non-square target size.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        for (H, W), size, seed, name in _PREPROCESS_CASES:
            frame = _screen(H, W, seed)
            before = frame.copy()
            out = preprocess_frame(frame) if size == (84, 84) else preprocess_frame(frame, size)
            raise_if_modified([(frame, before, "frame")], "your function modified the input frame in place; work "
                              "on new arrays (cv2.cvtColor and cv2.resize return new ones)")
            expected = _reference_preprocess(before, size)
            _check_frame_format(out, size, name)
            _compare_frames(out, expected, before, size, name)
        return ("equals ppo_course.envs.doom.preprocess_frame (RGB -> grey, INTER_AREA) within 1 grey level on 5 "
                "screens (160x120, 320x240, 130x100, 84x84, a non-square size); uint8, (height, width)")

    return run_check("preprocess_frame", body,
                     hint="cv2.cvtColor with COLOR_RGB2GRAY, then cv2.resize to (width, height) with INTER_AREA",
                     quiet=quiet)


# ============================================================================================
# ex06 task 2: FrameStacker
# ============================================================================================
class _ReplayEnv(gym.Env):
    """Replays given (H, W) uint8 frames: reset -> frames[0], each step -> the next one."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames
        self.observation_space = spaces.Box(0, 255, frames[0].shape, dtype=np.uint8)
        self.action_space = spaces.Discrete(1)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frames[0].copy(), {}

    def step(self, action):
        self.t += 1
        return self.frames[self.t].copy(), 0.0, False, False, {}


def _reference_stacks(episodes: list[list[np.ndarray]], num_frames: int) -> list[list[np.ndarray]]:
    """What Gymnasium's FrameStackObservation(padding_type="reset") returns for each call."""
    out = []
    for frames in episodes:
        env = gym.wrappers.FrameStackObservation(_ReplayEnv(frames), num_frames, padding_type="reset")
        obs = [env.reset()[0]]
        obs += [env.step(0)[0] for _ in frames[1:]]
        out.append(obs)
    return out


def _frames(n: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def _labels(stack: np.ndarray, named: dict[str, np.ndarray]) -> str:
    """``[f0, f0, f1, ?]``: which known frame each slot of ``stack`` holds."""
    names = []
    for slot in stack:
        found = [k for k, f in named.items() if f.shape == slot.shape and np.array_equal(slot, f)]
        names.append(found[0] if found else ("zeros" if not slot.any() else "?"))
    return "[" + ", ".join(names) + "]"


def _check_stacker_episodes(FrameStacker, num_frames: int, shape: tuple[int, int], seed: int) -> int:
    """Two episodes through one stacker, each call compared with Gymnasium's; returns the number of calls."""
    first = _frames(6, shape, seed)  # episode 1: f0 at reset, then f1..f5
    second = _frames(3, shape, seed + 100)  # episode 2: g0 at reset, then g1, g2
    named = {**{f"f{i}": f for i, f in enumerate(first)}, **{f"g{i}": g for i, g in enumerate(second)}}
    expected = _reference_stacks([first, second], num_frames)
    stacker = FrameStacker(num_frames) if num_frames != 4 else FrameStacker()
    verified = 0
    got = []
    for episode, frames in enumerate((first, second)):
        for i, frame in enumerate(frames):
            obs = stacker.reset(frame.copy()) if i == 0 else stacker.step(frame.copy())
            letter = "fg"[episode]
            call = f"reset({letter}0)" if i == 0 else f"step({letter}{i})"
            want = expected[episode][i]
            _check_stack_format(obs, call, want, shape, num_frames)
            if np.array_equal(obs, want):
                got.append((episode, i, call, obs, obs.copy()))
                continue
            _diagnose_stack(obs, want, call, named, named[letter + str(i)], first, i, episode, num_frames)
        for _, _, call, obs, copy in got:
            if not np.array_equal(obs, copy):
                raise Diagnosis(f"the observation returned by {call} changed when the stacker was called "
                                "again: you return your internal buffer, which later calls overwrite (a "
                                "rollout stores every observation); return a new array (np.stack(...), or "
                                "self.stack.copy())")
        verified += len(frames)
    return verified


def _check_stack_format(obs, call: str, want: np.ndarray, shape: tuple[int, int], num_frames: int) -> None:
    """What ``call`` returned is a (num_frames, H, W) uint8 NumPy array."""
    if hasattr(obs, "detach") and hasattr(obs, "numpy"):
        raise Diagnosis(f"{call} returned a torch tensor; return a NumPy array (the env's "
                        "observation; the trainer converts it)")
    if not isinstance(obs, np.ndarray):
        raise Diagnosis(f"{call} returned {type(obs).__name__}; return a NumPy array "
                        f"(num_frames, H, W) (e.g. np.stack(list_of_frames))")
    if obs.shape == (*shape, num_frames) and obs.shape != want.shape:
        raise Diagnosis(f"the stack is channels-last {obs.shape}; stack the frames on axis 0 to "
                        f"get (num_frames, H, W) = {want.shape}: the CNN (PyTorch's Conv2d) reads "
                        "the frames as channels, which come first")
    if obs.shape == shape and num_frames > 1:
        raise Diagnosis(f"{call} returned a single frame {obs.shape}; return all {num_frames} "
                        f"stacked frames, shape {want.shape}")
    if obs.shape != want.shape:
        raise Diagnosis(f"{call} returned shape {obs.shape}; expected (num_frames, H, W) = "
                        f"{want.shape} for num_frames = {num_frames}")
    if obs.dtype != np.uint8:
        raise Diagnosis(f"the stack is {obs.dtype}; keep the frames' uint8 (4x less memory "
                        "than float32; the network scales them)")


def _diagnose_stack(obs, want, call: str, named: dict, newest: np.ndarray, first: list, i: int, episode: int,
                    num_frames: int) -> None:
    """The usual mistake that makes ``obs`` differ from ``want`` (always raises)."""
    labels, want_labels = _labels(obs, named), _labels(want, named)
    if i == 0 and episode == 1 and any(np.array_equal(s, f) for s in obs for f in first):
        raise Diagnosis(f"memory leaking across episodes: after {call} the stack is {labels}, "
                        "still holding frames of the previous episode; reset must fill every slot "
                        f"with the new episode's first frame, {want_labels}")
    if i == 0 and any(not s.any() for s in obs):
        raise Diagnosis(f"after {call} the stack is {labels}: reset pads with zeros; fill the slots "
                        f"with copies of the first frame, {want_labels} (as "
                        "FrameStackObservation(padding_type='reset')): a black frame is a picture "
                        "the agent never sees in the game")
    if i == 0 and np.array_equal(obs[-1], newest):
        raise Diagnosis(f"after {call} the stack is {labels}: reset must fill every slot with the "
                        f"first frame, {want_labels}")
    if np.array_equal(obs[::-1], want):
        raise Diagnosis(f"newest frame first: after {call} the stack is {labels}, expected "
                        f"{want_labels}; the order is reversed: the oldest frame goes first and the "
                        "newest last (obs[-1] is the frame just passed in)")
    if num_frames > 1 and all(np.array_equal(s, newest) for s in obs):
        raise Diagnosis(f"after {call} all {num_frames} slots hold the newest frame, {labels}: they "
                        f"are one and the same array (e.g. [frame] * {num_frames} then a slot written "
                        "in place); keep separate copies, e.g. a deque of frame.copy() or np.roll "
                        "on a stacked array")
    raise Diagnosis(f"after {call} the stack should be {want_labels} (oldest first), got {labels}")


def check_frame_stacker(FrameStacker, quiet: bool = False):
    """Check a ``FrameStacker(num_frames=4)`` class with ``reset(frame)`` and ``step(frame)``.

    Contract: ``frame`` is one ``(H, W)`` uint8 preprocessed frame. ``reset(frame)`` starts an
    episode: every slot holds a copy of ``frame``. ``step(frame)`` drops the oldest frame and
    appends ``frame`` as the newest. Both return a ``(num_frames, H, W)`` uint8 array, channels
    first, oldest first / newest last (``obs[-1]`` is ``frame``); a returned observation must not
    change when the stacker is called again (a rollout buffer keeps it). Compared with Gymnasium's
    ``FrameStackObservation(padding_type="reset")`` (what :func:`ppo_course.envs.doom.make_env`
    uses) over two episodes, with ``num_frames`` = 4 and 2.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        verified = 0
        for num_frames, shape, seed in ((4, (84, 84), 11), (2, (12, 10), 12)):
            verified += _check_stacker_episodes(FrameStacker, num_frames, shape, seed)
        return (f"equals Gymnasium's FrameStackObservation(padding_type='reset') on {verified} calls over two "
                "episodes each, num_frames 4 and 2: (num_frames, H, W) uint8, newest last, refilled at reset, "
                "returned stacks left unchanged by later calls")

    return run_check("FrameStacker", body,
                     hint="keep the last num_frames frames; reset repeats the first frame; return np.stack(...), newest last",
                     quiet=quiet)


# ============================================================================================
# ex06 task 3: shaping_reward
# ============================================================================================
#: Coefficients with distinct values, so that a swapped coefficient or sign shows.
_CONFIG = DoomConfig(native_scale=0.0, kill_reward=5.0, ammo_reward=0.03, ammo_penalty=0.02, health_penalty=0.05,
                     health_gain_scale=0.04, progress_scale=0.01)
_ORDER = ("KILLCOUNT", "HEALTH", "POSITION_X", "AMMO2", "AMMO3", "AMMO5", "AMMO6", "SELECTED_WEAPON_AMMO")
_SHUFFLED = ("SELECTED_WEAPON_AMMO", "AMMO6", "POSITION_X", "AMMO3", "HEALTH", "AMMO5", "KILLCOUNT", "AMMO2")
_BASE = {"KILLCOUNT": 0.0, "HEALTH": 100.0, "POSITION_X": 300.0, "AMMO2": 40.0, "AMMO3": 8.0, "AMMO5": 0.0,
         "AMMO6": 0.0, "SELECTED_WEAPON_AMMO": 40.0, "AMMO4": 40.0}


def _shaping_cases():
    """(name, prev, now, max_x, config, names) with prev/now dicts of game variables."""
    b = _BASE

    def case(name, now, prev=None, max_x=320.0, config=_CONFIG, names=_ORDER):
        p = dict(b, **(prev or {}))
        return name, p, dict(p, **now), max_x, config, names

    return [
        case("a kill, 3 bullets, 12 health lost, 20 units of new ground",
             dict(KILLCOUNT=1, HEALTH=88, POSITION_X=340, AMMO2=37, AMMO4=37, SELECTED_WEAPON_AMMO=37)),
        case("walking back over ground already covered (x 400 -> 450, max_x 500)",
             dict(POSITION_X=450), prev=dict(POSITION_X=400), max_x=500.0),
        case("the 4th kill (KILLCOUNT 3 -> 4)", dict(KILLCOUNT=4), prev=dict(KILLCOUNT=3)),
        case("a medkit (health 40 -> 65)", dict(HEALTH=65), prev=dict(HEALTH=40)),
        case("a shotgun shell (AMMO3 8 -> 7, shotgun selected)", dict(AMMO3=7, SELECTED_WEAPON_AMMO=7),
             prev=dict(SELECTED_WEAPON_AMMO=8)),
        case("switching from the pistol to the shotgun (SELECTED_WEAPON_AMMO 40 -> 8, no pool changes)",
             dict(SELECTED_WEAPON_AMMO=8)),
        case("picking up a clip (AMMO2 40 -> 50)", dict(AMMO2=50, AMMO4=50, SELECTED_WEAPON_AMMO=50)),
        case("a killing blow (health 30 -> -6)", dict(HEALTH=-6), prev=dict(HEALTH=30)),
        case("stepping backwards (x 300 -> 280)", dict(POSITION_X=280), max_x=300.0),
        case("a kill and a new maximum with the deadly_corridor defaults",
             dict(KILLCOUNT=1, POSITION_X=360, HEALTH=90), config=DoomConfig.for_scenario("deadly_corridor")),
        case("progress only (other coefficients 0)", dict(KILLCOUNT=1, HEALTH=50, POSITION_X=330, AMMO2=30),
             config=DoomConfig(progress_scale=0.02)),
    ]


def _expected(prev, now, max_x, config):
    terms = _reference_shaping_terms(prev, now, max_x, config, 0.0)
    return {k: terms[k] for k in SHAPING_TERMS_EX06}, max(max_x, now["POSITION_X"])


def _call(fn, prev, now, max_x, config, names):
    prev_values = np.array([prev[n] for n in names], dtype=np.float64)
    values = np.array([now[n] for n in names], dtype=np.float64)
    before = (prev_values.copy(), values.copy())
    out = fn(tuple(names), prev_values, values, float(max_x), config)
    if not (np.array_equal(prev_values, before[0]) and np.array_equal(values, before[1])):
        raise Diagnosis("your function modified the game-variable arrays in place; read them only")
    if not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[0], dict):
        raise Diagnosis("return a tuple (terms, new_max_x): terms a dict {'kill', 'ammo', 'health', 'progress'} "
                        "-> float, new_max_x a float")
    terms, new_max_x = out
    missing = [k for k in SHAPING_TERMS_EX06 if k not in terms]
    if missing:
        raise Diagnosis(f"terms is missing {missing}; return every one of {list(SHAPING_TERMS_EX06)} "
                        "(0.0 for a term whose coefficients are 0)")
    try:
        return {k: float(terms[k]) for k in SHAPING_TERMS_EX06}, float(new_max_x)
    except (TypeError, ValueError):
        raise Diagnosis("every term and new_max_x must be a number (a float)") from None


def _near(a, b) -> bool:
    return abs(a - b) <= 1e-6 + 1e-6 * abs(b)


def _diagnose_term(term, got, want, prev, now, max_x, c, name):
    """Why term ``term`` is ``got`` instead of ``want`` in case ``name`` (always raises)."""
    d = {k: now[k] - prev[k] for k in now}
    diagnose = {"progress": _diagnose_progress, "kill": _diagnose_kill, "ammo": _diagnose_ammo,
                "health": _diagnose_health}.get(term)
    if diagnose is not None:
        diagnose(got, want, prev, now, d, max_x, c, name)
    for k in ("kill_reward", "ammo_reward", "ammo_penalty", "health_penalty", "health_gain_scale", "progress_scale"):
        if not getattr(c, k) and term in k and not _near(got, 0.0) and _near(want, 0.0):
            raise Diagnosis(f"in case '{name}' config.{k} = 0 but the {term} term is {got:.4g}: read the coefficients "
                            "from config, don't hard-code them")
    changed = {k: (prev[k], now[k]) for k in now if prev[k] != now[k]}
    raise Diagnosis(f"in case '{name}' (max_x = {max_x:g}, changes {changed}) the {term} term should be {want:.4g}, "
                    f"got {got:.4g}")


def _diagnose_progress(got, want, prev, now, d, max_x, c, name) -> None:
    dx = d["POSITION_X"]
    if _near(got, c.progress_scale * max(dx, 0.0)) and not _near(want, got):
        raise Diagnosis(f"reward for revisited positions: in case '{name}' progress pays {got:.4g}; it must pay only "
                        "for a new maximum x, progress_scale * max(0, x - max_x), else walking back and forth "
                        "farms the same metres again and again")
    if _near(got, c.progress_scale * dx) or _near(got, c.progress_scale * (now["POSITION_X"] - max_x)):
        raise Diagnosis(f"in case '{name}' progress is {got:.4g} (negative for moving back); only a new maximum x "
                        "pays and nothing is taken back: progress_scale * max(0, x - max_x)")


def _diagnose_kill(got, want, prev, now, d, max_x, c, name) -> None:
    if _near(got, c.kill_reward * now["KILLCOUNT"]):
        raise Diagnosis(f"kill reward on the cumulative count: in case '{name}' you pay kill_reward * KILLCOUNT "
                        f"= {got:.4g}; pay for the new kills of this step, the delta KILLCOUNT - "
                        "previous KILLCOUNT")


def _diagnose_ammo(got, want, prev, now, d, max_x, c, name) -> None:
    pools = sum(d[k] for k in AMMO_POOLS)
    if d["SELECTED_WEAPON_AMMO"] and not pools and not _near(got, 0.0):
        raise Diagnosis(f"switching weapons is penalised: in case '{name}' the ammo term is {got:.4g} although no "
                        "ammo pool changed. SELECTED_WEAPON_AMMO is the selected weapon's ammo and jumps when the "
                        f"weapon changes; use the net change summed over the pools {list(AMMO_POOLS)}")
    if "AMMO4" in now and d.get("AMMO4") and _near(got, c.ammo_reward * max(pools + d["AMMO4"], 0)
                                                  - c.ammo_penalty * max(-pools - d["AMMO4"], 0)):
        raise Diagnosis(f"in case '{name}' each bullet counts twice: AMMO4 (the chaingun slot) reads the same "
                        f"bullet pool as AMMO2; sum only the pools {list(AMMO_POOLS)}")
    for one in AMMO_POOLS + ("SELECTED_WEAPON_AMMO",):
        one_d = d[one]
        if one_d != pools and _near(got, c.ammo_reward * max(one_d, 0) - c.ammo_penalty * max(-one_d, 0)):
            raise Diagnosis(f"ammo from one slot only: in case '{name}' your ammo term follows {one} alone; sum "
                            f"the net change over all the ammo pools {list(AMMO_POOLS)} (a shotgun shell is "
                            "AMMO3)")
    if pools and _near(got, -want):
        raise Diagnosis(f"the ammo term has the wrong sign in case '{name}': spending ammo costs "
                        "ammo_penalty per unit, picking it up earns ammo_reward per unit")
    if pools > 0 and _near(got, -c.ammo_penalty * pools):
        raise Diagnosis(f"ammo gain and loss with the same sign: in case '{name}' picking up {pools:g} units "
                        "is penalised; gains earn ammo_reward * gain, spending costs ammo_penalty * spent")


def _diagnose_health(got, want, prev, now, d, max_x, c, name) -> None:
    dh = d["HEALTH"]
    clamped = max(now["HEALTH"], 0) - max(prev["HEALTH"], 0)
    if dh > 0 and (_near(got, -c.health_penalty * dh) or _near(got, -c.health_gain_scale * dh)):
        raise Diagnosis(f"health gain and loss with the same sign: in case '{name}' health went up by {dh:g} "
                        f"and the term is {got:.4g}; a gain earns health_gain_scale * gain, a loss costs "
                        "health_penalty * loss")
    if dh < 0 and (_near(got, c.health_penalty * -dh) or _near(got, c.health_gain_scale * -dh)):
        raise Diagnosis(f"health gain and loss with the same sign: in case '{name}' health went down by {-dh:g} "
                        f"and the term is {got:.4g} > 0; a loss costs health_penalty * loss")
    if dh != clamped and _near(got, -c.health_penalty * max(-dh, 0)):
        raise Diagnosis(f"in case '{name}' the killing blow reports health {now['HEALTH']:g}: clamp health at 0 "
                        "before taking the delta (max(health, 0)); overkill is not damage taken")
    if dh < 0 and _near(got, c.health_gain_scale * dh):
        raise Diagnosis(f"in case '{name}' the health loss is scaled by health_gain_scale; losses cost "
                        "health_penalty per point, gains earn health_gain_scale per point")
    if dh > 0 and _near(got, c.health_penalty * dh):
        raise Diagnosis(f"in case '{name}' the health gain is scaled by health_penalty; gains earn "
                        "health_gain_scale per point")


def check_shaping_reward(shaping_reward, quiet: bool = False):
    """Check ``shaping_reward(names, prev_values, values, max_x, config) -> (terms, new_max_x)``.

    Contract: ``names`` is the tuple of registered game-variable names, in the engine's order
    (``game.get_available_game_variables()``); ``prev_values`` and ``values`` are 1-D float arrays
    in that order (``state.game_variables``) before and after one agent step; ``max_x`` is the
    largest ``POSITION_X`` reached so far in the episode; ``config`` a
    :class:`~ppo_course.envs.doom.DoomConfig`. Returns ``terms``, a dict with the floats
    ``"kill"``, ``"ammo"``, ``"health"``, ``"progress"`` (each term as
    :func:`ppo_course.envs.doom.shaping_terms` computes it), and ``new_max_x``. Compared with the
    package on 11 hand-made steps, then on the same steps with the variables registered in another
    order (and with the chaingun slot ``AMMO4`` registered too).

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        cases = _shaping_cases()
        runs = [(case, names) for case in cases for names in (case[5],)]
        runs += [(case, _SHUFFLED) for case in cases]
        runs += [(case, ("AMMO4",) + _SHUFFLED) for case in cases]
        for (name, prev, now, max_x, config, _), names in runs:
            want_terms, want_max = _expected(prev, now, max_x, config)
            got_terms, got_max = _call(shaping_reward, prev, now, max_x, config, names)
            wrong = [k for k in SHAPING_TERMS_EX06 if not _near(got_terms[k], want_terms[k])]
            if not wrong and _near(got_max, want_max):
                continue
            if names != _ORDER:
                if "AMMO4" in names and wrong == ["ammo"]:
                    _diagnose_term("ammo", got_terms["ammo"], want_terms["ammo"], prev, now, max_x, config, name)
                # the same step passed with the usual order: the lookup depends on the position
                raise Diagnosis(f"hard-coded variable index: case '{name}' is right when the variables are registered "
                                f"as {list(_ORDER)} but wrong ({', '.join(wrong) or 'new_max_x'}) when they come as "
                                f"{list(names)}; look each variable up by name, e.g. vars = dict(zip(names, values)) "
                                "then vars['HEALTH']")
            for term in wrong:
                _diagnose_term(term, got_terms[term], want_terms[term], prev, now, max_x, config, name)
            if _near(got_max, max_x) and want_max != max_x:
                raise Diagnosis(f"in case '{name}' new_max_x stays {max_x:g} although x reached {now['POSITION_X']:g}; "
                                "return max(max_x, x), or the same ground pays again next step")
            raise Diagnosis(f"in case '{name}' new_max_x should be max(max_x, x) = {want_max:g}, got {got_max:g}")
        return (f"equals ppo_course.envs.doom.shaping_terms (kill, ammo, health, progress) and max(max_x, x) on "
                f"{len(cases)} hand-made steps (kills, medkit, shells, weapon switch, killing blow, revisited ground), "
                "each with the variables in 3 registration orders")

    return run_check("shaping_reward", body,
                     hint="vars = dict(zip(names, values)); each term from the deltas; progress only past max_x",
                     quiet=quiet)
