"""The command line as a user calls it: a real debug run, eval, play with GIFs, interrupts and locks in
subprocesses; every error path through ``main(argv)``, the console script's entry point, in this process
(the same one line on stderr and exit status, without the seconds a new Python and PyTorch take to start)."""

import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "ppo_course.cli"]


def run(*args, cwd=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: ``main(args)`` in this process, returned as ``run`` returns a subprocess's result."""
    from ppo_course.cli import main

    def call(*args):
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, misspelt options
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


def one_error_line(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppo-course: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("run")
    proc = run("train", "--env", "LunarLander-v3", "--preset", "debug", "--seed", "0", "--logdir", logdir,
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "trained 2048 steps" in proc.stdout
    return logdir


def test_train_writes_a_run(trained_run):
    for name in ("metrics.csv", "latest.pt", "best.pt"):
        assert (trained_run / name).is_file()


def test_eval_prints_mean_std_and_success_rate(trained_run):
    proc = run("eval", "--logdir", trained_run, "--episodes", "3")
    assert proc.returncode == 0, proc.stderr
    assert "mean return" in proc.stdout and "±" in proc.stdout and "success rate" in proc.stdout
    stochastic = run("eval", "--logdir", trained_run, "--episodes", "2", "--stochastic", "--checkpoint", "latest.pt")
    assert stochastic.returncode == 0 and "(stochastic)" in stochastic.stdout


def test_play_saves_gifs(trained_run, tmp_path):
    proc = run("play", "--logdir", trained_run, "--episodes", "2", "--save-gif", "--gif-fps", "30",
               "--gif-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    gifs = sorted(tmp_path.glob("*.gif"))
    assert len(gifs) == 2 and all(g.stat().st_size > 1000 for g in gifs)
    import imageio.v3 as iio
    frames = iio.imread(gifs[0], index=None)
    assert frames.ndim == 4 and frames.shape[0] > 10 and frames.shape[-1] in (3, 4)


def test_help_lists_every_field_with_its_description(cli):
    proc = cli("train", "--help")
    assert proc.returncode == 0
    for flag, words in (("--learning-rate", "Adam learning rate"), ("--num-envs", "parallel environments"),
                        ("--clip-coef", "clip range"), ("--gae-lambda", "GAE lambda")):
        assert flag in proc.stdout and words in proc.stdout


def test_unknown_env_id(tmp_path, cli):
    one_error_line(cli("train", "--env", "LunarLandr-v3", "--logdir", tmp_path / "x"),
                   "unknown environment id 'LunarLandr-v3'")
    assert not (tmp_path / "x").exists()  # nothing written


def test_unknown_preset_and_bad_value(tmp_path, cli):
    one_error_line(cli("train", "--preset", "turbo", "--logdir", tmp_path), "unknown preset 'turbo'")
    one_error_line(cli("train", "--learning-rate", "-0.001", "--logdir", tmp_path), "learning_rate")
    one_error_line(cli("train", "--num-minibatches", "7", "--logdir", tmp_path), "num_minibatches")


def test_missing_logdir_and_checkpoint(tmp_path, cli):
    one_error_line(cli("eval", "--logdir", tmp_path / "nope"), "does not exist")
    one_error_line(cli("play", "--logdir", tmp_path), "no checkpoint best.pt")
    one_error_line(cli("train", "--logdir", tmp_path, "--resume"), "nothing to resume")


def test_corrupt_checkpoint(tmp_path, cli):
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    one_error_line(cli("eval", "--logdir", tmp_path), "cannot read checkpoint")


def test_checkpoint_from_another_environment(trained_run, tmp_path, cli):
    one_error_line(cli("eval", "--logdir", trained_run, "--env", "CartPole-v1", "--episodes", "1"),
                   "trained on LunarLander-v3", "CartPole-v1")
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    one_error_line(cli("train", "--logdir", copy, "--resume", "--env", "CartPole-v1"), "trained on LunarLander-v3")


def test_doctor_reports_each_check():
    proc = run("doctor")
    for name in ("Python", "PyTorch", "Gymnasium", "Box2D", "ViZDoom", "GPU", "LunarLander-v3", "Colab"):
        assert name in proc.stdout
    assert "✓ LunarLander-v3" in proc.stdout
    assert "ℹ GPU:" in proc.stdout and "✗ GPU" not in proc.stdout  # no GPU is information, not a failure
    assert proc.returncode == 0


def test_sigterm_stops_a_run_like_ctrl_c_and_keeps_its_checkpoint(tmp_path):
    """`kill` / `timeout` / a batch scheduler: one line, exit 130, latest.pt still loadable, no traceback."""
    import signal
    import time

    from ppo_course.checkpoint import load_checkpoint

    proc = subprocess.Popen([*CLI, "train", "--env", "CartPole-v1", "--preset", "debug", "--logdir", str(tmp_path),
                             "--total-timesteps", "100000000", "--eval-interval", "1024", "--eval-episodes", "1",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "latest.pt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert load_checkpoint(tmp_path / "latest.pt")["global_step"] > 0


# -- guarded run directories --------------------------------------------------------------------------
def _debug_train(logdir, *flags):
    return run("train", "--env", "CartPole-v1", "--preset", "debug", "--seed", "0", "--logdir", logdir,
               "--eval-episodes", "1", "--no-progress", *flags)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def test_train_refuses_a_folder_that_holds_a_run_and_touches_nothing(trained_run, tmp_path):
    logdir = shutil.copytree(trained_run, tmp_path / "run")
    before = _snapshot(logdir)
    one_error_line(_debug_train(logdir), "already holds a run", "--resume", "--restart")
    assert _snapshot(logdir) == before


def test_restart_keeps_the_old_run_aside(trained_run, tmp_path):
    logdir = shutil.copytree(trained_run, tmp_path / "run")
    before = _snapshot(logdir)
    proc = _debug_train(logdir, "--restart")
    assert proc.returncode == 0, proc.stderr
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and _snapshot(aside[0]) == before, "the old run must be kept whole"
    assert (logdir / "best.pt").is_file() and "moved to" in proc.stdout
    one_error_line(run("train", "--logdir", logdir, "--restart", "--resume", "--no-progress"), "choose one")


def test_a_second_process_on_a_locked_run_stops_with_the_holders_pid(tmp_path):
    import os

    from ppo_course.checkpoint import RunLock

    lock = RunLock(tmp_path)  # this test process plays the run that is still training
    try:
        one_error_line(_debug_train(tmp_path), "in use by another training process", f"PID {os.getpid()}")
    finally:
        lock.release()
    RunLock(tmp_path).release()  # released: the folder can be locked again


def test_stale_temporary_files_are_removed_at_the_next_start(trained_run, tmp_path):
    logdir = shutil.copytree(trained_run, tmp_path / "run")
    stale = logdir / "latest.pt.k2j4x9.tmp"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    proc = run("train", "--logdir", logdir, "--resume", "--total-timesteps", "2176", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()


def test_logdir_that_is_a_file_and_misspelt_options_are_one_line_errors(tmp_path, cli):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run")
    one_error_line(_debug_train(a_file), "is a file")
    misspelt = cli("train", "--env", "CartPole-v1", "--learning-rat", "5e-4", "--logdir", tmp_path / "x")
    assert misspelt.returncode == 2 and "unrecognized arguments: --learning-rat" in misspelt.stderr
    assert not (tmp_path / "x").exists()


# -- interrupts keep every finished update ------------------------------------------------------------
def _endless_run(logdir):
    return subprocess.Popen([*CLI, "train", "--env", "CartPole-v1", "--preset", "debug", "--logdir", str(logdir),
                             "--total-timesteps", "100000000", "--eval-interval", "0", "--eval-episodes", "1",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(logdir, proc, rows, timeout=120):
    import time

    from ppo_course.logging import read_metrics

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(read_metrics(logdir)["global_step"]) >= rows:
                return
        except (FileNotFoundError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("the run logged too few updates in time")


def test_ctrl_c_finishes_the_update_logs_it_and_checkpoints_it(tmp_path):
    """No evaluation has run (eval_interval 0), yet every finished update is kept: the checkpoint is at the
    last logged row's step, and the message says so."""
    import signal

    from ppo_course import PPOConfig
    from ppo_course.checkpoint import load_checkpoint
    from ppo_course.logging import read_metrics

    proc = _endless_run(tmp_path)
    _wait_for_rows(tmp_path, proc, 3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    steps = read_metrics(tmp_path)["global_step"]
    saved = load_checkpoint(tmp_path / "latest.pt")["global_step"]
    batch = PPOConfig.from_presets(["debug"], env_id="CartPole-v1").batch_size
    assert saved == steps[-1] and len(steps) == saved // batch  # every finished update: logged and saved
    assert f"checkpoint at step {saved:,}" in stderr.strip().splitlines()[-1]


def test_a_second_ctrl_c_stops_at_once_and_says_what_was_kept(tmp_path):
    import signal
    import time

    proc = _endless_run(tmp_path)
    _wait_for_rows(tmp_path, proc, 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    if (tmp_path / "latest.pt").exists():
        from ppo_course.checkpoint import load_checkpoint

        assert f"checkpoint at step {load_checkpoint(tmp_path / 'latest.pt')['global_step']:,}" in last
    else:
        assert "nothing was saved yet" in last
    assert not list(tmp_path.glob("*.tmp"))


# -- bad input: one line, exit 2, nothing written -------------------------------------------------------
@pytest.mark.parametrize("argv, fragment", [
    (["eval", "--logdir", "RUN", "--seed", "-1"], "must be 0 or more"),
    (["play", "--logdir", "RUN", "--gif-fps", "0"], "must be a positive integer"),
    (["train", "--env", "CartPole-v1", "--device", "cuda:abc", "--logdir", "NEW"], "not a device name"),
    (["train", "--env", "CarRacing-v3", "--preset", "debug", "--logdir", "NEW"], "Box action spaces need flat"),
    (["train", "--logdir", "RUN", "--resume", "--preset", "fast"], "--preset cannot change a resumed run"),
    (["train", "--env", "doom:basic", "--env-kwargs", '{"shaping": 5}', "--logdir", "NEW"], "shaping must be a dict"),
    (["train", "--env", "CartPole-v1", "--learning-rate", "1e38", "--logdir", "NEW"], "learning_rate"),
    (["play", "--logdir", "RUN", "--episodes", "1", "--save-gif", "--gif-dir", "/proc/no/gifs"], "cannot write GIFs"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, fragment, trained_run, tmp_path, cli):
    argv = [str(trained_run) if a == "RUN" else str(tmp_path / "new") if a == "NEW" else a for a in argv]
    before = _snapshot(trained_run)
    proc = cli(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "new").exists() and _snapshot(trained_run) == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, cli):
    one_error_line(cli("train", "--env", "CartPole-v1", "--device", "cuda", "--logdir", tmp_path / "new"),
                   "PyTorch sees no CUDA GPU")
    assert not (tmp_path / "new").exists()


def test_negative_numbers_are_values_not_options(tmp_path, cli):
    one_error_line(cli("train", "--learning-rate", "-3e-4", "--logdir", tmp_path), "learning_rate")


def test_a_bare_checkpoint_name_is_looked_up_in_the_run_directory(trained_run, tmp_path, cli):
    """A best.pt in the working folder must not shadow the run's own."""
    (tmp_path / "best.pt").write_bytes(b"not the run's checkpoint")
    proc = run("eval", "--logdir", trained_run, "--episodes", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(trained_run / "best.pt") in proc.stdout
    one_error_line(cli("eval", "--logdir", tmp_path / "best.pt", "--episodes", "1"), "is a file")


def test_play_gif_dir_that_is_a_file_is_one_line(trained_run, tmp_path, cli):
    a_file = tmp_path / "gifs"
    a_file.write_text("")
    one_error_line(cli("play", "--logdir", trained_run, "--episodes", "1", "--save-gif", "--gif-dir", a_file),
                   "cannot write GIFs")


def test_a_run_whose_policy_collapsed_ends_with_a_warning(tmp_path, trained_run):
    from ppo_course.diagnose import COLLAPSE_SYMPTOMS, diagnose

    proc = _debug_train(tmp_path / "run", "--learning-rate", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "ppo-course: warning: the policy collapsed." in proc.stderr and "Traceback" not in proc.stderr
    # the healthy run the other CLI tests share has nothing to flag
    assert not [f for f in diagnose(trained_run) if f.symptom in COLLAPSE_SYMPTOMS]


def test_main_called_from_python_puts_back_the_sigterm_handler_and_warning_printer(trained_run, tmp_path, cli):
    before = signal.getsignal(signal.SIGTERM), warnings.showwarning
    assert cli("eval", "--logdir", trained_run, "--episodes", "1").returncode == 0
    one_error_line(cli("eval", "--logdir", tmp_path / "nope"), "does not exist")
    assert (signal.getsignal(signal.SIGTERM), warnings.showwarning) == before
