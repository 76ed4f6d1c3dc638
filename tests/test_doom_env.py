"""The ViZDoom environment: real, headless games of the bundled scenarios, a few seconds in all.

Shaping is tested twice: on hand-computed deltas (the pure function) and on real game transitions
(a shot costs one bullet, floor damage costs health, walking back and forth earns no progress).
"""

import os

import numpy as np
import pytest

pytest.importorskip("vizdoom")

from ppo_course.envs import EnvironmentIdError, make_env, make_vector_env  # noqa: E402
from ppo_course.envs import doom  # noqa: E402
from ppo_course.envs.doom import (  # noqa: E402
    ACTION_TABLES, AMMO_POOLS, SCENARIO_SHAPING_DEFAULTS, SHAPING_TERMS, SHARED_BUTTONS, DoomConfig, DoomEnvError,
    VizDoomGymnasiumEnv, action_table, preprocess_frame, required_variables, shaping_terms,
)

STRAFE_L, STRAFE_R, ATK = 0, 1, 2          # basic's actions
FWD, BACK = 0, 1                           # deadly_corridor's first actions
TURN_L = 1                                 # health_gathering's


# -- spaces, actions, frames ------------------------------------------------------------------------

def test_observation_space_is_stacked_uint8_frames_channels_first():
    env = make_env("doom:basic", render_mode="rgb_array")
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 3
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and obs.max() > 0
    assert all((obs[i] == obs[0]).all() for i in range(4))  # the stack starts as 4 copies of the first frame
    obs, *_ = env.step(STRAFE_R)
    assert not (obs[-1] == obs[0]).all()                    # newest frame last
    assert env.render().shape == (120, 160, 3)               # RGB at the engine's 160x120
    env.close()


def test_action_tables_are_multi_hot_rows_over_the_shared_buttons():
    sizes = {"basic": 3, "defend_the_center": 3, "health_gathering": 5, "deadly_corridor": 12}
    for scenario, n in sizes.items():
        table = action_table(scenario)
        assert table.shape == (n, len(SHARED_BUTTONS)) and table.dtype == np.uint8
        assert set(np.unique(table)) <= {0, 1} and (table.sum(1) >= 1).all()
    corridor = action_table("deadly_corridor")
    assert corridor[7].tolist() == [1, 0, 0, 0, 0, 0, 1]   # seed: index 7 = forward + attack
    assert corridor[8].tolist() == [0, 0, 0, 0, 1, 0, 1]   # seed: index 8 = strafe left + attack
    for scenario in ACTION_TABLES:                         # only buttons each scenario's .cfg lists
        allowed = set(doom.cfg_buttons(scenario))
        pressed = {SHARED_BUTTONS[i] for i in np.flatnonzero(action_table(scenario).any(0))}
        assert pressed <= allowed, scenario


def test_preprocess_frame_is_grayscale_area_resize():
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[:, :80] = (255, 0, 0)                               # left half red
    out = preprocess_frame(rgb)
    assert out.shape == (84, 84) and out.dtype == np.uint8
    assert out[0, 0] == 76 and out[0, -1] == 0              # 0.299 * 255 (ITU-R 601 weights)
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess_frame(rgb.astype(np.float32))


# -- episode ends and the vector env ------------------------------------------------------------------

def test_vector_env_same_step_autoreset_and_timeout_truncation():
    """basic with a 20-tic time-out (counted after the scenario's start tics): 5 agent steps of 4 tics."""
    envs = make_vector_env("doom:basic", 2, episode_timeout=20)
    single = make_env("doom:basic", episode_timeout=20)
    assert envs.single_observation_space.shape == (4, 84, 84) and envs.single_action_space.n == 3
    obs, _ = envs.reset(seed=[7, 8])
    single_obs, _ = single.reset(seed=7)
    assert (obs[0] == single_obs).all()                     # seeded: same game, same pixels
    for t in range(1, 20):
        obs, reward, term, trunc, info = envs.step(np.array([STRAFE_L, STRAFE_L]))
        single_obs, single_reward, single_term, single_trunc, single_info = single.step(STRAFE_L)
        assert reward[0] == single_reward
        if trunc[0]:
            break
    assert t == 5 and single_trunc and not single_term and not term.any()  # a time-out is not a termination
    assert info["_final_obs"][0] and (info["final_obs"][0] == single_obs).all()
    assert not (obs[0] == single_obs).all()                 # obs is already the next episode's start
    assert info["_episode"][0] and info["episode"]["l"][0] == 5 and info["episode"]["r"][0] == -20.0
    stats = info["final_info"]["episode_stats"]
    assert stats["native_return"][0] == -20.0 and stats["success"][0] == 0.0 and stats["dead"][0] == 0.0
    envs.close()
    single.close()


def test_episode_stats_at_the_end_of_a_terminated_episode():
    """health_gathering, turning on the spot: the acid floor kills the player (a termination)."""
    env = VizDoomGymnasiumEnv("health_gathering", shaping={"health_penalty": 1.0, "health_gain_scale": 2.0})
    env.reset(seed=0)
    start_health = env._vars["HEALTH"]
    for _ in range(1000):
        _, reward, term, trunc, info = env.step(TURN_L)
        if term or trunc:
            break
    assert term and not trunc
    stats = info["episode_stats"]
    expected = {"kills", "health", "ammo_used", "max_progress", "native_return", "shaped_return", "success", "dead",
                *(f"term_{k}" for k in SHAPING_TERMS)}
    assert set(stats) == expected
    assert stats["dead"] == 1.0 and stats["success"] == 0.0 and stats["health"] <= 0
    assert stats["term_health"] == -start_health            # every point lost, no overkill, nothing gained
    assert stats["shaped_return"] == pytest.approx(stats["native_return"] - start_health)
    env.close()


def test_killing_the_monster_is_a_success_with_kill_and_ammo_terms():
    """basic: strafe until the monster is centred, then shoot; the kill ends the episode (terminated)."""
    env = VizDoomGymnasiumEnv("basic", shaping={"kill_reward": 10.0, "ammo_penalty": 1.0})
    for seed in range(10):
        env.reset(seed=seed)
        for _ in range(70):
            _, _, term, trunc, info = env.step(ATK)
            if term or trunc:
                break
        if term:
            break
    assert term and not trunc, "no seed put the monster in front of the gun"
    stats = info["episode_stats"]
    assert stats["kills"] == 1 and stats["success"] == 1.0 and stats["dead"] == 0.0
    assert stats["term_kill"] == 10.0                        # the kill on the final step counts
    assert stats["ammo_used"] >= 1 and stats["term_ammo"] == -stats["ammo_used"]
    env.close()


def test_seeded_reset_is_deterministic():
    env = VizDoomGymnasiumEnv("basic")
    first = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in (0, 1, 2, 0)]
    again = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in (0, 1, 2, 0)]
    other = env.reset(seed=4)[0]
    assert all((a == b).all() for a, b in zip(first, again))
    assert not (other == first[0]).all()                    # the monster stands elsewhere
    env.close()


# -- shaping: the pure function on hand deltas ------------------------------------------------------

def _vars(kills=0.0, health=100.0, x=0.0, sel=10.0, ammo=(50.0, 0.0, 0.0, 0.0)):
    return {"KILLCOUNT": kills, "HEALTH": health, "POSITION_X": x, "SELECTED_WEAPON_AMMO": sel,
            **dict(zip(AMMO_POOLS, ammo))}


FULL = DoomConfig(native_scale=0.5, kill_reward=5.0, ammo_reward=0.2, ammo_penalty=0.1, panic_penalty=0.3,
                  health_penalty=0.05, health_gain_scale=0.02, progress_scale=0.01, living_reward=-0.001)


def test_shaping_terms_on_hand_deltas():
    prev = _vars()
    terms = shaping_terms(prev, _vars(kills=2, health=90, x=30, sel=8, ammo=(48, 0, 0, 0)), 10.0, FULL, native_reward=4.0)
    assert list(terms) == list(SHAPING_TERMS)
    assert terms == pytest.approx({"native": 2.0, "kill": 10.0, "ammo": -0.2, "panic": 0.0,
                                   "health": -0.5, "progress": 0.2, "living": -0.001})
    # pick-ups: +10 shells, +25 health; the selected weapon is empty -> panic
    terms = shaping_terms(prev, _vars(health=125, sel=0, ammo=(50, 10, 0, 0)), 0.0, FULL)
    assert terms["ammo"] == pytest.approx(2.0) and terms["health"] == pytest.approx(0.5)
    assert terms["panic"] == -0.3
    assert shaping_terms(prev, _vars(sel=-1), 0.0, FULL)["panic"] == 0.0   # no weapon raised yet: not empty


def test_shaping_ammo_is_net_over_pools_and_switching_is_free():
    prev = _vars(ammo=(50, 8, 0, 0))
    # switching from pistol to shotgun changes SELECTED_WEAPON_AMMO, not the pools: no cost
    assert shaping_terms(prev, _vars(sel=8, ammo=(50, 8, 0, 0)), 0.0, FULL)["ammo"] == 0.0
    # one bullet spent while picking up 4 shells: net +3
    assert shaping_terms(prev, _vars(ammo=(49, 12, 0, 0)), 0.0, FULL)["ammo"] == pytest.approx(0.6)


def test_shaping_progress_pays_only_new_maximum_x():
    cfg = DoomConfig(progress_scale=0.01)
    xs, max_x, paid = [0.0, 100.0, 50.0, 100.0, 120.0, 20.0, 120.0], 0.0, []
    for prev_x, x in zip(xs, xs[1:]):
        paid.append(shaping_terms(_vars(x=prev_x), _vars(x=x), max_x, cfg)["progress"])
        max_x = max(max_x, x)
    assert paid == pytest.approx([1.0, 0.0, 0.0, 0.2, 0.0, 0.0])   # back and forth earns nothing


def test_shaping_health_is_clamped_at_zero_and_inactive_terms_read_nothing():
    cfg = DoomConfig(health_penalty=1.0)
    assert shaping_terms(_vars(health=10), _vars(health=-6), 0.0, cfg)["health"] == -10.0  # no overkill
    # native only: no variable is needed at all
    assert shaping_terms({}, {}, 0.0, DoomConfig(), native_reward=-4.0) == {**dict.fromkeys(SHAPING_TERMS, 0.0),
                                                                            "native": -4.0}


def test_required_variables_follow_the_active_terms():
    assert required_variables(DoomConfig()) == ()
    assert required_variables(DoomConfig(kill_reward=1.0)) == ("KILLCOUNT",)
    assert required_variables(DoomConfig(ammo_penalty=1.0)) == AMMO_POOLS
    assert required_variables(DoomConfig(panic_penalty=1.0)) == ("SELECTED_WEAPON_AMMO",)
    assert set(required_variables(SCENARIO_SHAPING_DEFAULTS["deadly_corridor"])) == {
        "KILLCOUNT", *AMMO_POOLS, "SELECTED_WEAPON_AMMO", "HEALTH", "POSITION_X"}


# -- shaping: real transitions ---------------------------------------------------------------------

def test_real_corridor_progress_and_one_bullet_per_shot():
    env = VizDoomGymnasiumEnv("deadly_corridor", shaping={"native_scale": 0.0, "kill_reward": 0.0, "ammo_penalty": 1.0,
                                                          "ammo_reward": 0.0, "panic_penalty": 0.0,
                                                          "health_penalty": 0.0, "health_gain_scale": 0.0})
    assert set(env.variable_names) >= set(AMMO_POOLS) and "AMMO4" not in env.variable_names
    env.reset(seed=0)
    start_x = env._vars["POSITION_X"]
    for _ in range(8):
        env.step(FWD)
    far = env._max_x
    assert far > start_x + 50 and env._sums["progress"] == pytest.approx(0.01 * (far - start_x))
    back_and_forth = [env.step(a)[1] for a in [BACK] * 3 + [FWD] * 2]
    assert sum(back_and_forth) == pytest.approx(0.01 * (env._max_x - far))  # only ground beyond `far` pays
    # One pistol shot lowers both AMMO2 and AMMO4 in the engine (pistol and chaingun share bullets);
    # the ammo term charges it once.
    ammo_before = env.game.get_game_variable(doom._variable("AMMO2"))
    chaingun_before = env.game.get_game_variable(doom._variable("AMMO4"))
    rewards = [env.step(6)[1] for _ in range(3)]             # ATK
    spent = ammo_before - env.game.get_game_variable(doom._variable("AMMO2"))
    assert spent >= 1 and chaingun_before - env.game.get_game_variable(doom._variable("AMMO4")) == spent
    assert env._sums["ammo"] == -spent and sum(rewards) == pytest.approx(-spent)
    env.close()


# -- errors -------------------------------------------------------------------------------------------

def test_bad_ids_kwargs_and_unmeasurable_terms_are_one_clear_error():
    with pytest.raises(EnvironmentIdError, match="unknown Doom scenario 'basicc'"):
        make_vector_env("doom:basicc", 2)
    with pytest.raises(ValueError, match="unknown Doom env argument 'frameskip'"):
        make_vector_env("doom:basic", 2, frameskip=4)
    with pytest.raises(ValueError, match="unknown shaping coefficient 'kill'"):
        make_env("doom:basic", shaping={"kill": 1.0})
    with pytest.raises(ValueError, match="'progress_scale' cannot be measured in basic"):
        make_vector_env("doom:basic", 1, shaping={"progress_scale": 0.01})
    with pytest.raises(ValueError, match="'kill_reward' cannot be measured in health_gathering"):
        make_env("doom:health_gathering", shaping={"kill_reward": 1.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        DoomConfig(health_penalty=-1.0)
    with pytest.raises(ValueError, match="frame_skip must be an int >= 1"):
        make_env("doom:basic", frame_skip=0)
    with pytest.raises(ValueError, match="takes no env_kwargs"):
        make_vector_env("CartPole-v1", 1, frame_skip=4)
    with pytest.raises(DoomEnvError, match="screen_resolution"):
        VizDoomGymnasiumEnv("basic", screen_resolution="RES_1X1")


def test_shaping_overrides_one_field_of_the_scenario_defaults():
    cfg = DoomConfig.for_scenario("deadly_corridor", {"kill_reward": 1.0})
    assert cfg.kill_reward == 1.0 and cfg.progress_scale == SCENARIO_SHAPING_DEFAULTS["deadly_corridor"].progress_scale
    assert DoomConfig.for_scenario("basic") == DoomConfig()   # basic: native reward only


def test_raw_steps_per_second_runs():
    assert doom.raw_steps_per_second("basic", num_envs=1, frame_skip=4, seconds=0.2) > 0


# -- ViZDoom's own files ------------------------------------------------------------------------------

@pytest.mark.parametrize("asynchronous", [False, True])
def test_vizdoom_files_go_to_the_runs_folder_not_the_working_folder(asynchronous, tmp_path, monkeypatch):
    """The engine writes `_vizdoom.ini` and `_vizdoom/` where it starts: runs_dir("vizdoom"), never the cwd."""
    work, runs = tmp_path / "work", tmp_path / "runs"
    work.mkdir()
    monkeypatch.setenv("PPO_COURSE_RUNS", str(runs))
    monkeypatch.chdir(work)
    envs = make_vector_env("doom:basic", 2, asynchronous=asynchronous)
    envs.reset(seed=0)
    envs.step(np.array([STRAFE_L, ATK]))
    envs.close()
    assert os.getcwd() == str(work)
    assert list(work.iterdir()) == []
    assert (runs / "vizdoom" / "_vizdoom.ini").is_file() and (runs / "vizdoom" / "_vizdoom").is_dir()


@pytest.mark.parametrize("shaping, message", [
    (5, "shaping must be a dict of coefficients"),
    ({"kill_reward": "x"}, "'kill_reward' must be a finite number"),
    ({"kill_reward": float("inf")}, "'kill_reward' must be a finite number"),
    ({"kill_scale": 1.0}, "unknown shaping coefficient 'kill_scale'"),
])
def test_bad_shaping_is_one_clear_error(shaping, message):
    with pytest.raises(DoomEnvError, match=message):
        DoomConfig.for_scenario("basic", shaping)


def _engines_under(root: int) -> dict[int, str]:
    """``{pid: instance id}`` of the ViZDoom engines anywhere below process ``root`` (Linux)."""
    import os

    parent, engines = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"+viz_instance_id" in args:
            engines[int(entry)] = args[args.index(b"+viz_instance_id") + 1].decode()

    def below(pid):
        while pid in parent and pid > 1:
            pid = parent[pid]
            if pid == root:
                return True
        return False

    return {pid: instance for pid, instance in engines.items() if below(pid)}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_killed_process_leaves_no_doom_engine_behind(asynchronous, tmp_path):
    """kill -9 of a process with open games, in-process or in AsyncVectorEnv workers: no engine survives
    (the watcher of each process that started one kills it) and no shared memory is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ppo_course.envs.reaper import engine_is_running

    script = ("from ppo_course.envs import make_vector_env\nimport time\n"
              f"envs = make_vector_env('doom:basic', 2, asynchronous={asynchronous}); envs.reset(seed=0)\n"
              "print('ready', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PPO_COURSE_RUNS": str(tmp_path / "runs")})
    assert proc.stdout.readline().strip() == "ready"
    engines = _engines_under(proc.pid)
    assert len(engines) == 2 and all(engine_is_running(pid, i) for pid, i in engines.items())
    assert all(any(name.endswith(i) for name in os.listdir("/dev/shm")) for i in engines.values())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(engine_is_running(pid, i) for pid, i in engines.items()):
        time.sleep(0.2)
    assert not any(engine_is_running(pid, i) for pid, i in engines.items()), "an engine outlived its killed parent"
    time.sleep(0.5)
    assert not [name for name in os.listdir("/dev/shm") if any(name.endswith(i) for i in engines.values())]
