"""ViZDoom throughput of the course trainer: raw game speed, rollout speed with the CNN+LSTM policy, peak memory.

For one Doom preset (default ``doom:deadly_corridor``: 8 envs, 160x120 engine screen, frame skip 4,
84x84x4 observations, the 512-wide LSTM agent) it prints

* raw ViZDoom steps/s: the same number of games stepped in turn with random actions, screen
  buffer read, no wrapper and no network (:func:`ppo_course.envs.doom.raw_steps_per_second`);
* rollout steps/s: the trainer's collector (``trainer.make_collector``) filling rollouts -- game steps,
  frame preprocessing and stacking, policy inference (one batched CNN + LSTM forward per step
  and group) and storage; the PPO update excluded -- for three settings: one in-process vector
  env, two pipelined env groups (the preset's ``env_groups = 2``), and subprocess (async) envs;
* the peak resident memory of a real default ``train()`` run of a few updates, updates included:
  the Python process plus its ViZDoom game processes (each game is a child process);

and last ``rollout_efficiency = X``: for the best setting, the median over ``--pairs`` rounds of
rollout steps/s divided by the raw steps/s measured just before in the same round (a shared VM's
speed drifts by tens of percent from minute to minute; a round sees nearly the same machine).
Targets: efficiency >= 0.5 on CPU; peak memory of a default deadly_corridor run <= 3 GB.

    python benchmarks/doom_throughput.py [--env doom:deadly_corridor] [--pairs 3] [--rollouts 3] [--updates 3]
"""

from __future__ import annotations

import argparse
import platform
import threading
import time

import numpy as np
import psutil
import torch

from ppo_course import PPOConfig, train
from ppo_course.envs.doom import raw_steps_per_second, scenario_of
from ppo_course.networks import build_agent
from ppo_course.trainer import make_collector, make_train_envs

DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's default for this machine, before anything changes it


def rollout_steps_per_second(config: PPOConfig, rollouts: int) -> float:
    """Steps/s of the trainer's collector (after one warm-up rollout), policy inference included."""
    torch.set_num_threads(config.torch_threads or DEFAULT_THREADS)  # 0 = PyTorch's default, as in train()
    envs = make_train_envs(config)
    agent = build_agent(config, envs[0].single_observation_space.shape, envs[0].single_action_space)
    collector = make_collector(envs, agent, config.num_steps, seed=0)
    try:
        collector.collect()
        start = time.perf_counter()
        for _ in range(rollouts):
            collector.collect()
        return rollouts * config.batch_size / (time.perf_counter() - start)
    finally:
        collector.close()


class PeakMemory:
    """Samples the resident memory of this process plus its children every ``interval`` s; keeps the peak."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="doom:deadly_corridor")
    parser.add_argument("--rollouts", type=int, default=3, help="timed rollouts per setting and round")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of (raw, every rollout setting)")
    parser.add_argument("--updates", type=int, default=3, help="updates of the memory-measuring train() run")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each raw ViZDoom measurement")
    args = parser.parse_args()

    config = PPOConfig.from_presets(["defaults"], env_id=args.env)
    frame_skip = config.env_kwargs.get("frame_skip", 4)
    print(f"{args.env}: {config.num_envs} envs x {config.num_steps} steps, frame skip {frame_skip}, "
          f"engine screen 160x120, LSTM {config.lstm_hidden_size if config.use_lstm else 'off'}, "
          f"torch threads {config.torch_threads}, env groups {config.env_groups}; "
          f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")

    settings = {
        "sync, one vector env": config.replace(env_groups=1, async_envs=False),
        f"sync, {max(config.env_groups, 2)} pipelined env groups": config.replace(env_groups=max(config.env_groups, 2),
                                                                                  async_envs=False),
        "async (one subprocess per env), one vector env": config.replace(env_groups=1, async_envs=True),
    }
    raw, rates = [], {label: [] for label in settings}
    for round_ in range(args.pairs):
        raw.append(raw_steps_per_second(scenario_of(args.env), num_envs=config.num_envs, frame_skip=frame_skip,
                                        seconds=args.seconds))
        line = [f"round {round_ + 1}: raw {raw[-1]:,.0f}"]
        for label, setting in settings.items():
            rates[label].append(rollout_steps_per_second(setting, args.rollouts))
            line.append(f"{label} {rates[label][-1]:,.0f} ({rates[label][-1] / raw[-1]:.2f})")
        print("; ".join(line), flush=True)
    print(f"raw ViZDoom: {np.median(raw):,.0f} steps/s (median; {config.num_envs} games stepped in turn, random actions)")
    ratios = {label: float(np.median(np.array(r) / np.array(raw))) for label, r in rates.items()}
    for label, r in rates.items():
        print(f"rollout with policy inference, {label}: {np.median(r):,.0f} steps/s (median), "
              f"median ratio to raw {ratios[label]:.2f}")

    with PeakMemory() as memory:
        start = time.perf_counter()
        train(config.replace(total_timesteps=args.updates * config.batch_size, eval_interval=0, eval_episodes=1),
              None, progress=False)
        elapsed = time.perf_counter() - start
    print(f"train(): {args.updates} updates of {config.batch_size} steps in {elapsed:.1f} s "
          f"({args.updates * config.batch_size / elapsed:,.0f} steps/s incl. updates and one evaluation episode); "
          f"peak resident memory {memory.peak / 2**30:.2f} GB (process + ViZDoom games)")

    best_label = max(ratios, key=ratios.get)
    print(f"best rollout setting: {best_label}")
    print(f"rollout_efficiency = {ratios[best_label]:.2f}")


if __name__ == "__main__":
    main()
