"""ViZDoom scenarios as Gymnasium environments: pixels, multi-hot actions, reward shaping.

An env id ``"doom:<scenario>"`` (``doom:basic``, ``doom:deadly_corridor``, ...) names one of the
scenarios bundled with the ``vizdoom`` package (``vizdoom.scenarios_path``; nothing is downloaded).
:func:`make_vector_env` gives the same interface as the LunarLander vector env: Gymnasium vector
env, ``AutoresetMode.SAME_STEP`` (the ended episode's last observation in ``info["final_obs"]``),
``RecordEpisodeStatistics`` (``info["episode"]["r"]``, ``["l"]``, mask ``info["_episode"]``),
observations ``Box(0, 255, (frame_stack, 84, 84), uint8)`` channels-first, actions ``Discrete(n)``.

The pieces, each small enough to test and teach on its own:

* **Buttons.** Every scenario is played through the same 7 atomic buttons
  :data:`SHARED_BUTTONS` = ``[FWD, BACK, TURN_L, TURN_R, STRAFE_L, STRAFE_R, ATK]``. The engine is
  always given these 7 in this order, so an action is one multi-hot row of length 7 whatever the
  scenario. Each scenario's discrete action table
  (:data:`ACTION_TABLES`) presses only the buttons that the scenario's own ``.cfg`` lists: ``basic``
  keeps its 3 classic actions (strafe left, strafe right, attack), because moving forward or turning
  would make it a different task from the one every published result is measured on. The check is
  made when the env is built (:func:`action_table`).
* **Frames.** The engine renders RGB at ``screen_resolution`` (default 160x120, the cheapest size
  ViZDoom offers); :func:`preprocess_frame` turns it into one 84x84 grayscale uint8 frame (OpenCV,
  ``INTER_AREA``), and Gymnasium's ``FrameStackObservation`` stacks the last 4, channels-first.
  Observations stay uint8 (4x less rollout memory than float32); the network scales them to [0, 1]
  (dividing by 255 in the wrapper instead would store float32 frames).
* **Game variables.** Registered with the engine by name: the variables the *active* shaping terms
  need (:func:`required_variables`: a term whose coefficients are 0 asks for nothing) plus the few
  the episode statistics report (:data:`STAT_VARIABLES`). They are read by name from
  ``state.game_variables`` through the engine's own list of registered variables, never through a
  hard-coded index (which breaks as soon as another variable is registered).
* **Reward.** :func:`shaping_terms` is a pure function of two dicts of game variables (previous and
  current agent step), the best x reached so far, the native reward and a :class:`DoomConfig`; the
  env's reward is the sum of its terms. :data:`SCENARIO_SHAPING_DEFAULTS` gives each scenario's
  coefficients; the ``shaping`` argument overrides any of them.
* **Episode ends.** An episode that ends because the scenario's time-out was reached is reported as
  ``truncated=True, terminated=False``; deaths and goals are ``terminated``. ViZDoom's own Gymnasium
  wrapper sets ``terminated`` on every end, time-outs included (from 1.3 it also sets ``truncated`` on a
  time-out, but a trainer that masks the bootstrap on ``terminated`` still drops it), which tells GAE
  that the value after a time-out is 0:
  the critic then learns that states late in an episode are worth less for no reason it can see in
  the pixels (a clock is not in the observation). Reporting ``truncated`` lets the trainer bootstrap
  from V(final_obs) instead (Pardo et al., 2018, "Time Limits in Reinforcement Learning").

Details that are easy to get wrong, and the choices made here:

* **Ammo** is summed over the four Doom ammo *pools* ``AMMO2`` (bullets), ``AMMO3`` (shells),
  ``AMMO5`` (rockets), ``AMMO6`` (cells), not over all ten ``AMMO0..AMMO9``. ViZDoom's ``AMMO<i>``
  is the ammo of weapon slot *i*, and slots share pools: the pistol (2) and chaingun (4) both read
  the bullet pool, the plasma rifle (6) and BFG (7) the cell pool. One pistol shot in
  ``deadly_corridor`` lowers both ``AMMO2`` and ``AMMO4`` by 1 (checked in the tests), so summing
  every slot would charge each bullet twice. Switching weapons changes none of the pools: it is free.
* **Health** is clamped at 0 before taking the delta: the engine reports negative health on a
  killing blow (e.g. -6), and overkill is not damage worth extra penalty.
* **Progress** pays only for a new maximum x (a plain ``dx`` reward would pay again every time the
  agent walks back and forth), measured from the episode's start position.
* **Native reward** is one term among the others, scaled by ``native_scale``: keeping it at face
  value or ignoring it is an explicit choice of coefficient (1 or 0), not a silent default.
* **Time-outs** are truncations (above).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from .lunar import EnvironmentIdError
from .replay import EpisodeRecorder

PREFIX = "doom:"

#: The 7 atomic buttons of every scenario, in the order of a multi-hot action row.
SHARED_BUTTONS: tuple[str, ...] = (
    "MOVE_FORWARD", "MOVE_BACKWARD", "TURN_LEFT", "TURN_RIGHT", "MOVE_LEFT", "MOVE_RIGHT", "ATTACK",
)
#: Short names used in the action tables: FWD, BACK, TURN_L, TURN_R, STRAFE_L, STRAFE_R, ATK.
BUTTON_SHORT_NAMES: tuple[str, ...] = ("FWD", "BACK", "TURN_L", "TURN_R", "STRAFE_L", "STRAFE_R", "ATK")
_SHORT_TO_INDEX = {name: i for i, name in enumerate(BUTTON_SHORT_NAMES)}

#: Per-scenario discrete action tables: each action is a set of buttons pressed together.
#: Only buttons the scenario's .cfg lists are used (checked by :func:`action_table`).
ACTION_TABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    # The classic 3-action tables of the small scenarios (the ones published results use).
    "basic": (("STRAFE_L",), ("STRAFE_R",), ("ATK",)),
    "defend_the_center": (("TURN_L",), ("TURN_R",), ("ATK",)),
    "defend_the_line": (("TURN_L",), ("TURN_R",), ("ATK",)),
    # Turning while walking is how you sweep a room for medkits: two combos on top of the 3 buttons.
    "health_gathering": (("FWD",), ("TURN_L",), ("TURN_R",), ("FWD", "TURN_L"), ("FWD", "TURN_R")),
    "health_gathering_supreme": (("FWD",), ("TURN_L",), ("TURN_R",), ("FWD", "TURN_L"), ("FWD", "TURN_R")),
    "my_way_home": (("FWD",), ("TURN_L",), ("TURN_R",), ("FWD", "TURN_L"), ("FWD", "TURN_R"),
                    ("STRAFE_L",), ("STRAFE_R",)),
    "take_cover": (("STRAFE_L",), ("STRAFE_R",)),
    # 12 actions: the 6 movements, attack, and attack combined with forward, strafing or turning
    # (index 7 = forward + attack, index 8 = strafe left + attack).
    "deadly_corridor": (
        ("FWD",), ("BACK",), ("TURN_L",), ("TURN_R",), ("STRAFE_L",), ("STRAFE_R",), ("ATK",),
        ("FWD", "ATK"), ("STRAFE_L", "ATK"), ("STRAFE_R", "ATK"), ("TURN_L", "ATK"), ("TURN_R", "ATK"),
    ),
}
SCENARIOS: tuple[str, ...] = tuple(ACTION_TABLES)

#: Scenarios with a goal along +x (a corridor), where the progress term means something.
PROGRESS_SCENARIOS = frozenset({"deadly_corridor"})

#: Doom's ammo pools as ViZDoom variables (bullets, shells, rockets, cells); see the module docstring.
AMMO_POOLS: tuple[str, ...] = ("AMMO2", "AMMO3", "AMMO5", "AMMO6")
#: Variables read for the episode statistics, whatever the shaping.
STAT_VARIABLES: tuple[str, ...] = ("KILLCOUNT", "HEALTH", "POSITION_X", *AMMO_POOLS)

#: The reward terms, in the order :func:`shaping_terms` returns them.
SHAPING_TERMS: tuple[str, ...] = ("native", "kill", "ammo", "panic", "health", "progress", "living")


class DoomEnvError(ValueError):
    """A Doom env id, argument or shaping choice that cannot work (one readable line)."""


@dataclass(frozen=True)
class DoomConfig:
    """Reward-shaping coefficients. Every term is a per-agent-step reward.

    Penalties are magnitudes (>= 0) that are subtracted. Units: kills, ammo units, health points,
    map units (a corridor is about 1,300 units long), agent steps.

    Attributes:
        native_scale: multiplies the scenario's own reward (``make_action``'s return, summed over
            the skipped frames; includes the cfg's living reward and death penalty).
        kill_reward: per kill (``KILLCOUNT`` increase).
        ammo_reward: per ammo unit gained (picked up), summed over the ammo pools.
        ammo_penalty: per ammo unit spent, summed over the ammo pools.
        panic_penalty: per step with the selected weapon empty (``SELECTED_WEAPON_AMMO == 0``).
        health_penalty: per health point lost (health clamped at 0).
        health_gain_scale: per health point gained (medkits).
        progress_scale: per map unit of *new* maximum x (no pay for revisiting).
        living_reward: added every step (on top of any living reward in the native reward).
    """

    native_scale: float = 1.0
    kill_reward: float = 0.0
    ammo_reward: float = 0.0
    ammo_penalty: float = 0.0
    panic_penalty: float = 0.0
    health_penalty: float = 0.0
    health_gain_scale: float = 0.0
    progress_scale: float = 0.0
    living_reward: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DoomEnvError(f"DoomConfig.{f.name} must be a finite number, got {value!r}")
            if f.name.endswith("_penalty") and value < 0:
                raise DoomEnvError(f"DoomConfig.{f.name} is a magnitude that gets subtracted; "
                                   f"it must be >= 0, got {value}")

    @classmethod
    def for_scenario(cls, scenario: str, overrides: "DoomConfig | Mapping[str, float] | None" = None) -> "DoomConfig":
        """The scenario's :data:`SCENARIO_SHAPING_DEFAULTS` with ``overrides`` (field -> value) applied.

        A ``DoomConfig`` passed as ``overrides`` is used as it is (a complete choice).

        Raises:
            DoomEnvError: unknown scenario or field, or a bad value.
        """
        check_scenario(scenario)
        if isinstance(overrides, DoomConfig):
            return overrides
        known = {f.name for f in dataclasses.fields(cls)}
        if overrides is not None and not isinstance(overrides, Mapping):
            raise DoomEnvError(f"shaping must be a dict of coefficients, e.g. {{\"kill_reward\": 1.0}}, not "
                               f"{overrides!r}; coefficients: {sorted(known)}")
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DoomEnvError(f"unknown shaping coefficient {unknown[0]!r}; expected one of {sorted(known)}")
        bad = [name for name, value in overrides.items()
               if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)]
        if bad:
            raise DoomEnvError(f"shaping coefficient {bad[0]!r} must be a finite number, not {overrides[bad[0]]!r}")
        return dataclasses.replace(SCENARIO_SHAPING_DEFAULTS[scenario], **overrides)


#: Each scenario's default shaping. Why these:
#:
#: * ``basic``, ``defend_the_center``, ``defend_the_line``, ``health_gathering(_supreme)``,
#:   ``my_way_home``, ``take_cover``: native reward only. Their native rewards are already dense and
#:   aligned with the goal (basic: -1 per tic, +101 for the kill, -5 per missed shot; health
#:   gathering: +1 per tic alive, -100 for dying), and their published results (and the course's
#:   target of >= 75 on basic) are in native units, which the episode return then equals.
#: * ``deadly_corridor``: a shaped reward. Kills (5.0) and new ground (0.01 per unit; the whole
#:   corridor is worth about 13) are the main terms; the others: damage taken costs 0.05
#:   per health point (dying from full health about -5, the value of one kill), each bullet 0.02
#:   (a kill takes a few shots, so shooting stays clearly worth it) and picking bullets up from
#:   dead zombies earns the same back, an empty weapon costs 0.1 per step. The native reward is
#:   switched off: it pays +dx for every step towards the vest (again after walking back) plus 1000
#:   for the vest and -100 for dying, a scale that would drown every shaping term.
SCENARIO_SHAPING_DEFAULTS: dict[str, DoomConfig] = {
    **{name: DoomConfig() for name in SCENARIOS},
    "deadly_corridor": DoomConfig(native_scale=0.0, kill_reward=5.0, ammo_reward=0.02, ammo_penalty=0.02,
                                  panic_penalty=0.1, health_penalty=0.05, health_gain_scale=0.05,
                                  progress_scale=0.01, living_reward=0.0),
}


def check_scenario(scenario: str) -> None:
    """Raise :class:`EnvironmentIdError` with one line if ``scenario`` is not one of :data:`SCENARIOS`."""
    if scenario not in ACTION_TABLES:
        raise EnvironmentIdError(f"unknown Doom scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")


def scenario_of(env_id: str) -> str:
    """``"doom:basic"`` -> ``"basic"``; raises :class:`EnvironmentIdError` for an unknown scenario."""
    if not env_id.startswith(PREFIX):
        raise EnvironmentIdError(f"{env_id!r} is not a Doom env id (expected 'doom:<scenario>')")
    scenario = env_id[len(PREFIX):]
    check_scenario(scenario)
    return scenario


def cfg_path(scenario: str) -> str:
    """Path of the scenario's ``.cfg`` inside the installed ``vizdoom`` package."""
    import vizdoom

    check_scenario(scenario)
    return os.path.join(vizdoom.scenarios_path, f"{scenario}.cfg")


def cfg_buttons(scenario: str) -> tuple[str, ...]:
    """The buttons the scenario's ``.cfg`` lists (``available_buttons``), by name."""
    import vizdoom

    game = vizdoom.DoomGame()
    game.load_config(cfg_path(scenario))  # parses the file only; no engine is started
    return tuple(b.name for b in game.get_available_buttons())


def action_table(scenario: str) -> np.ndarray:
    """The scenario's discrete actions as multi-hot rows over :data:`SHARED_BUTTONS`.

    Returns:
        ``(n_actions, 7)`` uint8 array; row ``a`` is what action ``a`` presses.

    Raises:
        DoomEnvError: unknown scenario, or a table that presses a button its ``.cfg`` does not list.
    """
    check_scenario(scenario)
    allowed = set(cfg_buttons(scenario))
    table = np.zeros((len(ACTION_TABLES[scenario]), len(SHARED_BUTTONS)), dtype=np.uint8)
    for a, combo in enumerate(ACTION_TABLES[scenario]):
        for short in combo:
            i = _SHORT_TO_INDEX[short]
            if SHARED_BUTTONS[i] not in allowed:
                raise DoomEnvError(f"action {a} of {scenario} presses {SHARED_BUTTONS[i]}, which "
                                   f"{scenario}.cfg does not list ({sorted(allowed)})")
            table[a, i] = 1
    return table


def action_names(scenario: str) -> list[str]:
    """Readable names of the scenario's actions, e.g. ``["STRAFE_L", "STRAFE_R", "ATK"]`` or ``"FWD+ATK"``."""
    check_scenario(scenario)
    return ["+".join(combo) for combo in ACTION_TABLES[scenario]]


def required_variables(config: DoomConfig) -> tuple[str, ...]:
    """The game variables the *active* terms of ``config`` need (a term with zero coefficients needs none)."""
    needed: list[str] = []
    if config.kill_reward:
        needed.append("KILLCOUNT")
    if config.ammo_reward or config.ammo_penalty:
        needed.extend(AMMO_POOLS)
    if config.panic_penalty:
        needed.append("SELECTED_WEAPON_AMMO")
    if config.health_penalty or config.health_gain_scale:
        needed.append("HEALTH")
    if config.progress_scale:
        needed.append("POSITION_X")
    return tuple(needed)


def check_shaping(scenario: str, config: DoomConfig) -> None:
    """Raise :class:`DoomEnvError` if an active term of ``config`` cannot be measured in ``scenario``.

    Rules: kills, ammo and the panic penalty need the scenario's actions to include ATTACK
    (without it they can never change); progress needs a corridor along x (:data:`PROGRESS_SCENARIOS`).
    """
    check_scenario(scenario)
    can_attack = any("ATK" in combo for combo in ACTION_TABLES[scenario])
    for name in ("kill_reward", "ammo_reward", "ammo_penalty", "panic_penalty"):
        if getattr(config, name) and not can_attack:
            raise DoomEnvError(f"shaping term {name!r} cannot be measured in {scenario}: "
                               f"its actions cannot attack")
    if config.progress_scale and scenario not in PROGRESS_SCENARIOS:
        raise DoomEnvError(f"shaping term 'progress_scale' cannot be measured in {scenario}: only "
                           f"{', '.join(sorted(PROGRESS_SCENARIOS))} has a goal along x")


def shaping_terms(prev_vars: Mapping[str, float], vars: Mapping[str, float], max_x: float,
                  config: DoomConfig, native_reward: float = 0.0) -> dict[str, float]:
    """The reward of one agent step, term by term, from frame-to-frame deltas.

    Args:
        prev_vars: game variables (name -> value) after the previous agent step (or at reset).
        vars: game variables after this step. Only the variables of active terms are read
            (:func:`required_variables`).
        max_x: the largest ``POSITION_X`` reached so far in this episode, before this step
            (the start x at reset).
        config: the coefficients.
        native_reward: the scenario's own reward for this step.

    Returns:
        ``{term: reward}`` for every name in :data:`SHAPING_TERMS` (0.0 for inactive terms); the
        step's reward is the sum of the values.

    Raises:
        KeyError: a variable an active term needs is missing from ``prev_vars``/``vars``.
    """
    c = config
    terms = dict.fromkeys(SHAPING_TERMS, 0.0)
    terms["native"] = c.native_scale * float(native_reward)
    if c.kill_reward:
        terms["kill"] = c.kill_reward * max(0.0, vars["KILLCOUNT"] - prev_vars["KILLCOUNT"])
    if c.ammo_reward or c.ammo_penalty:
        delta = sum(vars[k] for k in AMMO_POOLS) - sum(prev_vars[k] for k in AMMO_POOLS)
        terms["ammo"] = c.ammo_reward * max(delta, 0.0) - c.ammo_penalty * max(-delta, 0.0)
    if c.panic_penalty and vars["SELECTED_WEAPON_AMMO"] == 0:  # -1 while no weapon is raised yet
        terms["panic"] = -c.panic_penalty
    if c.health_penalty or c.health_gain_scale:
        delta = max(vars["HEALTH"], 0.0) - max(prev_vars["HEALTH"], 0.0)
        terms["health"] = c.health_gain_scale * max(delta, 0.0) - c.health_penalty * max(-delta, 0.0)
    if c.progress_scale:
        terms["progress"] = c.progress_scale * max(0.0, vars["POSITION_X"] - max_x)
    terms["living"] = float(c.living_reward)
    return {k: float(v) for k, v in terms.items()}


def preprocess_frame(rgb: np.ndarray, size: tuple[int, int] = (84, 84)) -> np.ndarray:
    """One RGB screen ``(H, W, 3)`` uint8 -> one grayscale frame ``size`` = ``(height, width)`` uint8.

    Grayscale with OpenCV's ITU-R 601 weights, then ``cv2.resize`` with ``INTER_AREA`` (averages the
    pixels each output pixel covers: no aliasing when shrinking, unlike nearest/bilinear).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _variable(name: str):
    """The ``vizdoom.GameVariable`` called ``name`` (e.g. ``"HEALTH"``)."""
    import vizdoom as vzd

    return getattr(vzd.GameVariable, name)


_START_LOCK = threading.Lock()


def start_game(game) -> None:
    """``game.init()``, with ViZDoom's own files kept in the course's runs folder.

    The engine writes its config (``_vizdoom.ini``) and a ``_vizdoom/`` folder into the working
    directory of the process that starts it. Here the config path is set and the engine is started
    from ``runs_dir("vizdoom")`` (see :func:`ppo_course.course.runs_dir`), so nothing lands beside
    the notebooks or in a practitioner's working folder. The working directory is changed only for
    the duration of the call, under a lock, and restored even when ``init()`` raises.

    The engine is a child process; it is registered with this process's watcher
    (:mod:`ppo_course.envs.reaper`), which kills it if this process dies without closing the game.
    """
    from ..course import runs_dir

    folder = runs_dir("vizdoom")
    game.set_doom_config_path(str(folder / "_vizdoom.ini"))
    with _START_LOCK:
        previous = os.getcwd()
        os.chdir(folder)
        try:
            before = _engines()
            game.init()
        finally:
            os.chdir(previous)
        for pid, instance_id in _engines().items() - before.items():
            _watch(pid, instance_id)


_REAPER: dict[int, Any] = {}  # this process's PID -> its watcher (a forked process starts its own)


def _engines() -> dict[int, str]:
    """``{pid: instance id}`` of the ViZDoom engines that are children of this process (Linux; else {})."""
    found = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != os.getpid():
                continue
            with open(stat[:-4] + "cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"+viz_instance_id" in args:
            found[int(stat.split("/")[2])] = args[args.index(b"+viz_instance_id") + 1].decode()
    return found


def _watch(pid: int, instance_id: str) -> None:
    """Tell this process's watcher (started on first use) about one engine."""
    import subprocess
    import sys
    from pathlib import Path

    reaper = _REAPER.get(os.getpid())
    if reaper is None or reaper.poll() is not None:
        script = Path(__file__).with_name("reaper.py")
        reaper = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, text=True,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _REAPER[os.getpid()] = reaper
    reaper.stdin.write(f"{pid} {instance_id}\n")
    reaper.stdin.flush()


def _new_game(scenario: str, frame_buffer: bool, screen_resolution: str, episode_timeout: int | None,
              variables: tuple[str, ...]):
    """A started DoomGame for ``scenario``: headless, the 7 shared buttons, ``variables`` registered."""
    import vizdoom as vzd

    game = vzd.DoomGame()
    game.load_config(cfg_path(scenario))
    game.set_window_visible(False)
    game.set_sound_enabled(False)
    try:
        game.set_screen_resolution(getattr(vzd.ScreenResolution, screen_resolution))
    except AttributeError:
        raise DoomEnvError(f"unknown screen_resolution {screen_resolution!r}; expected a "
                           f"vizdoom.ScreenResolution name such as 'RES_160X120'") from None
    game.set_screen_format(vzd.ScreenFormat.RGB24 if frame_buffer else vzd.ScreenFormat.GRAY8)
    game.set_available_buttons([getattr(vzd.Button, b) for b in SHARED_BUTTONS])
    game.set_available_game_variables([_variable(v) for v in variables])
    if episode_timeout is not None:
        game.set_episode_timeout(int(episode_timeout))
    game.set_mode(vzd.Mode.PLAYER)
    start_game(game)
    return game


class VizDoomGymnasiumEnv(gym.Env):
    """One ViZDoom scenario as a Gymnasium env: 84x84 grayscale uint8 frames (one frame; stack with
    ``FrameStackObservation``, as :func:`make_env` does), ``Discrete(n)`` multi-hot actions, shaped reward.

    Args:
        scenario: a name in :data:`SCENARIOS`.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns the last RGB screen,
            ``(H, W, 3)`` uint8 at ``screen_resolution``).
        frame_skip: engine tics per agent step (the action is held; rewards are summed).
        resolution: ``(height, width)`` of the observation.
        shaping: a :class:`DoomConfig`, or a dict of coefficient overrides on the scenario's defaults.
        episode_timeout: episode length in engine tics, counted after the scenario's start tics
            (35 tics = 1 s; ``None``: the scenario's own, e.g. 300 for basic = 75 agent steps at frame skip 4).
        screen_resolution: the engine's render size, a ``vizdoom.ScreenResolution`` name.

    Observation: ``(height, width)`` uint8. Info at the last step of an episode:
    ``info["episode_stats"]``, a dict of floats: ``kills``, ``health`` (at the end), ``ammo_used``,
    ``max_progress`` (largest x minus start x), ``native_return``, ``shaped_return``, ``success``
    (1.0 if the episode ended alive before the time-out: basic's monster killed, deadly_corridor's
    vest reached), ``dead``, and ``term_<name>`` (the episode's sum of each term in
    :data:`SHAPING_TERMS`). Through a vector env it arrives as ``info["final_info"]["episode_stats"]``.
    For plots, ``env.last_terms`` holds the last step's terms and ``env.variables`` its game variables.

    Raises:
        DoomEnvError: unknown scenario, bad argument, or a shaping term the scenario cannot measure.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(self, scenario: str, render_mode: str | None = None, frame_skip: int = 4,
                 resolution: tuple[int, int] = (84, 84), shaping: DoomConfig | Mapping[str, float] | None = None,
                 episode_timeout: int | None = None, screen_resolution: str = "RES_160X120"):
        check_scenario(scenario)
        if render_mode not in (None, "rgb_array"):
            raise DoomEnvError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, int) or frame_skip < 1:
            raise DoomEnvError(f"frame_skip must be an int >= 1, got {frame_skip!r}")
        if (not isinstance(resolution, (tuple, list)) or len(resolution) != 2
                or not all(isinstance(r, int) and r >= 8 for r in resolution)):
            raise DoomEnvError(f"resolution must be (height, width) ints >= 8, got {resolution!r}")
        if episode_timeout is not None and (isinstance(episode_timeout, bool)
                                            or not isinstance(episode_timeout, int) or episode_timeout < 1):
            raise DoomEnvError(f"episode_timeout must be None or an int >= 1 (engine tics), got {episode_timeout!r}")
        self.scenario = scenario
        self.render_mode = render_mode
        self.frame_skip = frame_skip
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.config = DoomConfig.for_scenario(scenario, shaping)
        check_shaping(scenario, self.config)
        self.actions = action_table(scenario)
        self._action_lists = [row.astype(float).tolist() for row in self.actions]
        variables = tuple(dict.fromkeys(required_variables(self.config) + STAT_VARIABLES))
        self.game = _new_game(scenario, True, screen_resolution, episode_timeout, variables)
        # Name -> position in state.game_variables, from the engine's own list (never hard-coded).
        self.variable_names = tuple(v.name for v in self.game.get_available_game_variables())
        self._variable_enums = tuple(self.game.get_available_game_variables())
        self.observation_space = spaces.Box(0, 255, self.resolution, dtype=np.uint8)
        self.action_space = spaces.Discrete(len(self.actions))
        self._rgb = np.zeros((self.game.get_screen_height(), self.game.get_screen_width(), 3), np.uint8)

    # -- helpers ---------------------------------------------------------------------------------
    def _read(self) -> dict[str, float]:
        """Game variables by name (and the RGB screen into ``self._rgb``) from one ``get_state()``.

        After an episode's last tic there is no state: the screen keeps its last frame, and the
        variables are asked from the engine one by one (``get_game_variable``), so the kill or the
        damage of the final step still counts.
        """
        state = self.game.get_state()
        if state is not None:
            self._rgb = state.screen_buffer  # (H, W, 3) uint8 for RGB24
            return dict(zip(self.variable_names, state.game_variables.tolist()))
        return {name: float(self.game.get_game_variable(var))
                for name, var in zip(self.variable_names, self._variable_enums)}

    # -- Gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # Every episode gets its own game seed, drawn from np_random unless one is given: an episode is then
        # fixed by np_random's state at reset and the actions, whatever the game played before (the
        # property exact resume relies on, see envs/replay.py)
        game_seed = seed if seed is not None else self.np_random.integers(2**32)
        self.game.set_seed(int(game_seed) % (2**32))
        self.game.new_episode()
        self._vars = self._read()
        self._start = dict(self._vars)
        self._start_x = self._vars["POSITION_X"]
        self._max_x = self._start_x
        self._ammo_used = 0.0
        self._sums = dict.fromkeys(SHAPING_TERMS, 0.0)
        self.last_terms = dict.fromkeys(SHAPING_TERMS, 0.0)
        self._native_return = 0.0
        return preprocess_frame(self._rgb, self.resolution), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        native = float(self.game.make_action(self._action_lists[int(action)], self.frame_skip))
        finished = self.game.is_episode_finished()
        vars = self._read()
        terms = shaping_terms(self._vars, vars, self._max_x, self.config, native)
        reward = sum(terms.values())
        ammo_delta = sum(vars[k] for k in AMMO_POOLS) - sum(self._vars[k] for k in AMMO_POOLS)
        self._ammo_used += max(-ammo_delta, 0.0)
        self._max_x = max(self._max_x, vars["POSITION_X"])
        self._native_return += native
        for k, v in terms.items():
            self._sums[k] += v
        self.last_terms = terms
        self._vars = vars
        obs = preprocess_frame(self._rgb, self.resolution)
        truncated = bool(finished and self.game.is_episode_timeout_reached() and not self.game.is_player_dead())
        terminated = bool(finished and not truncated)
        info: dict[str, Any] = {}
        if finished:
            dead = bool(self.game.is_player_dead())
            info["episode_stats"] = {
                "kills": vars["KILLCOUNT"] - self._start["KILLCOUNT"],
                "health": vars["HEALTH"],
                "ammo_used": self._ammo_used,
                "max_progress": self._max_x - self._start_x,
                "native_return": self._native_return,
                "shaped_return": sum(self._sums.values()),
                "success": float(terminated and not dead),
                "dead": float(dead),
                **{f"term_{k}": v for k, v in self._sums.items()},
            }
        return obs, float(reward), terminated, truncated, info

    @property
    def variables(self) -> dict[str, float]:
        """The registered game variables after the last step (name -> value), e.g. ``["POSITION_X"]``."""
        return dict(self._vars)

    def render(self):
        if self.render_mode == "rgb_array":
            return self._rgb.copy()
        return None

    def close(self):
        if getattr(self, "game", None) is not None:
            self.game.close()
            self.game = None


#: Keyword arguments :func:`make_env` / :func:`make_vector_env` accept for Doom ids.
ENV_KWARGS = ("frame_skip", "frame_stack", "resolution", "shaping", "episode_timeout", "screen_resolution")


def _check_kwargs(env_kwargs: Mapping[str, Any]) -> None:
    unknown = sorted(set(env_kwargs) - set(ENV_KWARGS))
    if unknown:
        raise DoomEnvError(f"unknown Doom env argument {unknown[0]!r}; expected one of {', '.join(ENV_KWARGS)}")
    stack = env_kwargs.get("frame_stack", 4)
    if isinstance(stack, bool) or not isinstance(stack, int) or stack < 1:
        raise DoomEnvError(f"frame_stack must be an int >= 1, got {stack!r}")


def make_env(env_id: str, render_mode: str | None = None, **env_kwargs) -> gym.Env:
    """One Doom env with stacked frames: observations ``(frame_stack, 84, 84)`` uint8.

    Args:
        env_id: ``"doom:<scenario>"``.
        render_mode: ``None`` or ``"rgb_array"``.
        **env_kwargs: any of :data:`ENV_KWARGS` (``frame_stack`` default 4; the others go to
            :class:`VizDoomGymnasiumEnv`).

    Raises:
        DoomEnvError: unknown scenario or argument, or a bad value.
    """
    scenario = scenario_of(env_id)
    _check_kwargs(env_kwargs)
    kwargs = dict(env_kwargs)
    stack = kwargs.pop("frame_stack", 4)
    env = VizDoomGymnasiumEnv(scenario, render_mode=render_mode, **kwargs)
    # Repeat the first frame to fill the stack at reset (as SB3/CleanRL's Atari FrameStack).
    return gym.wrappers.FrameStackObservation(env, stack, padding_type="reset")


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool = False, norm_reward: bool = False,
                    gamma: float = 0.99, **env_kwargs) -> gym.vector.VectorEnv:
    """``num_envs`` Doom envs in one vector env: same-step autoreset, episode statistics (as ``lunar``).

    ``info["final_obs"]`` holds an ended episode's last observation, ``info["episode"]`` its shaped
    return and length (mask ``info["_episode"]``), ``info["final_info"]["episode_stats"]`` its
    Doom statistics (see :class:`VizDoomGymnasiumEnv`). ``asynchronous=True`` runs each game in
    its own process (``AsyncVectorEnv``): worth it for Doom once there are spare cores, since a game
    step costs far more than the inter-process traffic.

    Raises:
        DoomEnvError: unknown scenario or argument, or a bad value (checked before any game starts).
    """
    scenario = scenario_of(env_id)
    _check_kwargs(env_kwargs)
    check_shaping(scenario, DoomConfig.for_scenario(scenario, env_kwargs.get("shaping")))  # fail here, not in a worker
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise DoomEnvError(f"num_envs must be an int >= 1, got {num_envs!r}")
    # EpisodeRecorder: what a checkpoint needs to rebuild each game's state (exact resume, envs/replay.py)
    fns = [lambda: EpisodeRecorder(make_env(env_id, None, **env_kwargs)) for _ in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=gamma)
    return envs


def raw_steps_per_second(scenario: str = "basic", num_envs: int = 1, frame_skip: int = 4, seconds: float = 3.0,
                         screen_resolution: str = "RES_160X120", seed: int = 0) -> float:
    """Agent steps per second of bare ViZDoom: random actions, ``make_action(a, frame_skip)`` and the
    screen buffer read, no preprocessing, no Python wrapper; ``num_envs`` games stepped in turn in this
    process (one core). The denominator of the trainer's ``rollout_efficiency``.

    Returns:
        agent steps (summed over the games) per wall-clock second, after a short warm-up.
    """
    check_scenario(scenario)
    rng = np.random.default_rng(seed)
    table = [row.astype(float).tolist() for row in action_table(scenario)]
    games = [_new_game(scenario, True, screen_resolution, None, ()) for _ in range(num_envs)]
    try:
        for i, g in enumerate(games):
            g.set_seed(seed + i)
            g.new_episode()

        def run(n: int) -> None:
            for _ in range(n):
                for g in games:
                    g.make_action(table[rng.integers(len(table))], frame_skip)
                    if g.is_episode_finished():
                        g.new_episode()
                    state = g.get_state()
                    _ = state.screen_buffer

        run(20)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            run(50)
            steps += 50 * num_envs
        return steps / (time.perf_counter() - start)
    finally:
        for g in games:
            g.close()
