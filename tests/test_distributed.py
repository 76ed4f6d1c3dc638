"""Data-parallel PPO on torch.distributed: two CPU ranks (gloo) launched by torchrun, as a user launches them.

* after a run, both ranks hold bit-identical parameters, and rank 0 wrote the run directory;
* one update step of two ranks on the two halves of a rollout equals one step of a single process on the
  whole rollout (same minibatch composition: one minibatch per epoch, advantages not normalised, which
  is the only per-rank statistic), up to float rounding of the sum across ranks;
* a 2-rank run stopped after an update and resumed equals the 2-rank run that was never stopped;
* a rank that dies ends the run: rank 0 stops with one ``ppo-course: error:`` line naming what happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ppo_course import PPOConfig
from ppo_course.checkpoint import LATEST, load_checkpoint
from ppo_course.logging import read_metrics
from ppo_course.networks import MLPActorCritic

CONFIG = dict(env_id="LunarLander-v3", total_timesteps=1024, eval_interval=512, eval_episodes=1, anneal_lr=False)

TRAIN = textwrap.dedent("""
    import sys, torch
    from ppo_course import PPOConfig, distributed, train
    run_dir, out, stop_after, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume"
    config = PPOConfig.from_presets(["debug"], **{config!r})
    updates = []
    result = train(config, run_dir, resume=resume, progress=False, tensorboard=False,
                   callback=updates.append, should_stop=lambda: 0 < stop_after <= len(updates))
    torch.save(result.agent.state_dict(), f"{{out}}/rank{{distributed.rank()}}.pt")
    if len(sys.argv) > 5:  # also one update step on this rank's half of a fixed rollout (one_step.py in argv[5])
        sys.path.insert(0, sys.argv[5])
        from one_step import one_step
        torch.save(one_step(distributed.rank(), distributed.world_size()).state_dict(),
                   f"{{out}}/step{{distributed.rank()}}.pt")
    distributed.shutdown()
""")

def _torchrun(tmp_path, script: str, *args, nproc: int = 2, timeout: int = 240):
    path = tmp_path / f"script_{abs(hash(script))}.py"
    path.write_text(script)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(path), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _weights(path):
    return torch.load(path, weights_only=True)


ONE_STEP_MODULE = textwrap.dedent("""
    import copy
    import numpy as np
    import torch
    from ppo_course import PPOConfig
    from ppo_course.advantages import compute_gae
    from ppo_course.buffer import RolloutBuffer
    from ppo_course.envs import make_vector_env
    from ppo_course.networks import MLPActorCritic
    from ppo_course.rollout import RolloutCollector
    from ppo_course.trainer import ppo_update

    def one_step(rank, ranks):
        '''One SGD step of ppo_update on this rank's share (environments rank*4/ranks ...) of one 4-env rollout.'''
        torch.manual_seed(0)
        envs = make_vector_env("LunarLander-v3", 4)
        agent = MLPActorCritic(8, 4, hidden_size=16)
        buf, next_value = RolloutCollector(envs, agent, 16, seed=0).collect()
        envs.close()
        adv, ret = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations, next_value,
                               buf.final_values, 0.99, 0.95)
        mine = slice(rank * 4 // ranks, (rank + 1) * 4 // ranks)
        part = RolloutBuffer(**{k: v[:, mine] for k, v in vars(buf).items() if v is not None})
        config = PPOConfig(num_envs=4 // ranks, num_steps=16, update_epochs=1, num_minibatches=1, norm_adv=False,
                           max_grad_norm=0.5, target_kl=None)
        optimizer = torch.optim.SGD(agent.parameters(), lr=0.1)
        ppo_update(agent, optimizer, part, adv[:, mine], ret[:, mine], config, 0.01, np.random.default_rng(rank))
        return agent
""")


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-ranks")
    (folder / "one_step.py").write_text(ONE_STEP_MODULE)
    proc = _torchrun(folder, TRAIN.format(config=CONFIG), folder / "run", folder, 0, "new", folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def test_two_ranks_end_with_identical_parameters_and_rank_0_writes_the_run(two_rank_run):
    w0, w1 = _weights(two_rank_run / "rank0.pt"), _weights(two_rank_run / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    rows = read_metrics(two_rank_run / "run")
    batch = PPOConfig.from_presets(["debug"], **CONFIG).batch_size
    assert rows["global_step"] == [float(2 * batch * (i + 1)) for i in range(len(rows["global_step"]))]
    assert rows["global_step"][-1] == CONFIG["total_timesteps"] and set(rows["ranks"]) == {2.0}
    ckpt = load_checkpoint(two_rank_run / "run" / LATEST)
    assert len(ckpt["other_ranks"]) == 1  # rank 1's environments and RNGs, for an exact resume
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)


def test_stopped_and_resumed_two_rank_run_equals_the_uninterrupted_one(two_rank_run, tmp_path):
    stopped = _torchrun(tmp_path, TRAIN.format(config=CONFIG), tmp_path / "run", tmp_path, 3, "new")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / LATEST)["global_step"] < CONFIG["total_timesteps"]
    resumed = _torchrun(tmp_path, TRAIN.format(config=CONFIG), tmp_path / "run", tmp_path, 0, "resume")
    assert resumed.returncode == 0 and "warning" not in resumed.stderr.lower(), resumed.stderr[-3000:]
    a, b = read_metrics(tmp_path / "run"), read_metrics(two_rank_run / "run")
    for key in a:
        if key not in ("time_s", "charts/sps", "charts/eval_time_s"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for rank in (0, 1):
        w, ref = _weights(tmp_path / f"rank{rank}.pt"), _weights(two_rank_run / f"rank{rank}.pt")
        assert all(torch.equal(w[k], ref[k]) for k in w)


def test_two_ranks_on_two_halves_take_the_step_one_process_takes_on_the_whole(two_rank_run):
    tmp_path = two_rank_run  # its script also took one step on each rank's half (step0.pt, step1.pt)
    sys.path.insert(0, str(tmp_path))
    try:
        from one_step import one_step

        single = one_step(0, 1).state_dict()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("one_step", None)
    torch.manual_seed(0)
    start = MLPActorCritic(8, 4, hidden_size=16).state_dict()  # the weights one_step starts from
    assert any(not torch.equal(single[k], start[k]) for k in single)
    for rank in (0, 1):
        ranked = _weights(tmp_path / f"step{rank}.pt")
        for k in single:
            torch.testing.assert_close(ranked[k], single[k], rtol=0, atol=1e-6)


KILLED = textwrap.dedent("""
    import os, signal, sys
    import ppo_course.trainer as trainer
    from ppo_course import distributed
    from ppo_course.cli import main
    original = trainer._finish_update
    def finish(run, *args):
        if distributed.rank() == 1 and run.update == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(run, *args)
    trainer._finish_update = finish
    sys.exit(main(["train", "--env", "LunarLander-v3", "--preset", "debug", "--logdir", sys.argv[1],
                   "--total-timesteps", "100000", "--eval-interval", "256", "--eval-episodes", "1", "--no-progress"]))
""")


def test_a_killed_rank_ends_the_run_with_one_line_from_rank_0(tmp_path):
    """Rank 1 is killed during update 3. Rank 0's next collective fails and it says so in one line, naming
    the checkpoint kept. torchrun also stops the surviving ranks when it sees one die, so on a loaded machine
    it can kill rank 0 before rank 0 has said anything: then no line is printed, and the run must still
    end, with the last checkpoint whole."""
    proc = _torchrun(tmp_path, KILLED, tmp_path / "run", timeout=180)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("ppo-course:")]
    assert len(ours) <= 1, proc.stderr[-3000:]
    if ours:
        assert ours[0].startswith("ppo-course: error: rank 0 lost contact with the other ranks"), proc.stderr[-3000:]
        assert "checkpoint at step 512" in ours[0]  # the evaluation at 512 steps (2 ranks x 2 updates x 128)
    assert load_checkpoint(tmp_path / "run" / LATEST)["global_step"] == 512


def test_ctrl_c_on_the_nproc_launcher_stops_every_rank_after_one_update_and_says_what_was_kept(tmp_path):
    import signal
    import time

    from test_cli import CLI, _wait_for_rows

    proc = subprocess.Popen([*CLI, "train", "--nproc", "2", "--env", "CartPole-v1", "--preset", "debug",
                             "--total-timesteps", "100000000", "--eval-interval", "0", "--logdir", str(tmp_path),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(tmp_path, proc, 2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "SignalException" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("ppo-course:")]
    steps = read_metrics(tmp_path)["global_step"]
    saved = load_checkpoint(tmp_path / LATEST)["global_step"]
    assert saved == steps[-1] and ours[-1] == f"ppo-course: interrupted; checkpoint at step {saved:,} kept in " \
                                              f"{tmp_path / LATEST}"
    time.sleep(1)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_rank_of(p, tmp_path)]  # no rank left behind


def _is_rank_of(pid: str, logdir) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(logdir).encode() in f.read()
    except OSError:
        return False
