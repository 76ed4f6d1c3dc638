"""Training speed of one process against several ranks (``ppo-course train --nproc N``), same total batch.

For each environment, ``ppo-course train`` runs with ``--nproc 1`` and ``num_envs`` environments, then with
``--nproc N`` and ``num_envs / N`` environments per rank, so that every update sees the same number of
samples; evaluation is off. The speed is the last ``charts/sps`` of ``metrics.csv`` (environment steps of
all ranks per second of training, start-up excluded). Runs alternate, one at a time.

    python benchmarks/distributed_scaling.py [--nproc 2] [--steps 40960] [--rounds 2]

Prints a table and last ``distributed_speedup[ENV] = X`` (median over rounds of N-rank sps / 1-rank sps).
On a machine with fewer cores than ranks need, this measures the overhead, not the gain.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ppo_course.logging import read_metrics

#: environment -> (total num_envs, extra options): LunarLander's preset, doom:basic's preset
SETTINGS = {"LunarLander-v3": (16, []), "doom:basic": (8, [])}


def sps(env_id: str, nproc: int, num_envs: int, steps: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        logdir = Path(folder) / "run"
        command = [sys.executable, "-m", "ppo_course.cli", "train", "--env", env_id, "--nproc", str(nproc),
                   "--num-envs", str(num_envs // nproc), "--total-timesteps", str(steps), "--eval-interval", "0",
                   "--eval-episodes", "1", "--logdir", str(logdir), "--no-progress", *extra]
        subprocess.run(command, check=True, capture_output=True, text=True)
        return read_metrics(logdir)["charts/sps"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40_960)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--envs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    print(f"# {platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
          f"{args.steps:,} steps per run, evaluation off")
    print("| environment | processes x envs | steps/s (each round) |")
    print("|---|---|---|")
    speedups = {}
    for env_id in args.envs:
        num_envs, extra = SETTINGS[env_id]
        one, many = [], []
        for _ in range(args.rounds):
            one.append(sps(env_id, 1, num_envs, args.steps, extra))
            many.append(sps(env_id, args.nproc, num_envs, args.steps, extra))
        print(f"| {env_id} | 1 x {num_envs} | {', '.join(f'{x:.0f}' for x in one)} |")
        print(f"| {env_id} | {args.nproc} x {num_envs // args.nproc} | {', '.join(f'{x:.0f}' for x in many)} |")
        speedups[env_id] = statistics.median(m / o for m, o in zip(many, one))
    for env_id, x in speedups.items():
        print(f"distributed_speedup[{env_id}] = {x:.2f}")


if __name__ == "__main__":
    main()
