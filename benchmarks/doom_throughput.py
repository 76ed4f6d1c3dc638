"""ViZDoom throughput of the course trainer: raw game speed, rollout speed with the CNN+LSTM policy, peak memory.

For one Doom preset (default ``doom:deadly_corridor``: 8 envs, 160x120 engine screen, frame skip 4,
84x84x4 observations, the 512-wide LSTM agent) it prints

* raw ViZDoom steps/s: the same number of games stepped in turn with random actions, screen
  buffer read, no wrapper and no network (:func:`ppo_course.envs.doom.raw_steps_per_second`);
* rollout steps/s: :class:`ppo_course.trainer.RolloutCollector` filling rollouts -- game steps,
  frame preprocessing and stacking, policy inference (one batched CNN + LSTM forward per step)
  and storage; the PPO update excluded -- with in-process (sync) and subprocess (async) envs;
* the peak resident memory of a real default ``train()`` run of a few updates, updates included:
  the Python process plus its ViZDoom game processes (each game is a child process);

and last ``rollout_efficiency = X``: the better rollout steps/s divided by the raw steps/s.
Targets (issue 5): efficiency >= 0.5 on CPU; peak memory of a default deadly_corridor run <= 3 GB.

    python benchmarks/doom_throughput.py [--env doom:deadly_corridor] [--rollouts 4] [--updates 3]
"""

from __future__ import annotations

import argparse
import platform
import threading
import time

import psutil
import torch

from ppo_course import PPOConfig, train
from ppo_course.envs import make_vector_env
from ppo_course.envs.doom import raw_steps_per_second, scenario_of
from ppo_course.networks import build_agent
from ppo_course.trainer import RolloutCollector

DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's default for this machine, before anything changes it


def rollout_steps_per_second(config: PPOConfig, rollouts: int) -> float:
    """Steps/s of ``RolloutCollector.collect`` (after one warm-up rollout), policy inference included."""
    torch.set_num_threads(config.torch_threads or DEFAULT_THREADS)  # 0 = PyTorch's default, as in train()
    envs = make_vector_env(config.env_id, config.num_envs, asynchronous=config.async_envs, **config.env_kwargs)
    try:
        agent = build_agent(config, envs.single_observation_space.shape, envs.single_action_space.n)
        collector = RolloutCollector(envs, agent, config.num_steps, seed=0)
        collector.collect()
        start = time.perf_counter()
        for _ in range(rollouts):
            collector.collect()
        return rollouts * config.batch_size / (time.perf_counter() - start)
    finally:
        envs.close()


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
    parser.add_argument("--rollouts", type=int, default=4, help="timed rollouts per setting")
    parser.add_argument("--updates", type=int, default=3, help="updates of the memory-measuring train() run")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the raw ViZDoom measurement")
    args = parser.parse_args()

    config = PPOConfig.from_presets(["defaults"], env_id=args.env)
    frame_skip = config.env_kwargs.get("frame_skip", 4)
    print(f"{args.env}: {config.num_envs} envs x {config.num_steps} steps, frame skip {frame_skip}, "
          f"engine screen 160x120, LSTM {config.lstm_hidden_size if config.use_lstm else 'off'}, "
          f"torch threads {config.torch_threads}; {platform.processor() or platform.machine()}, "
          f"{psutil.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")

    raw = raw_steps_per_second(scenario_of(args.env), num_envs=config.num_envs, frame_skip=frame_skip,
                               seconds=args.seconds)
    print(f"raw ViZDoom: {raw:,.0f} steps/s ({config.num_envs} games stepped in turn, random actions)")

    results = {}
    for async_envs in (False, True):
        label = "async (one subprocess per env)" if async_envs else "sync (in-process)"
        results[label] = rollout_steps_per_second(config.replace(async_envs=async_envs), args.rollouts)
        print(f"rollout with policy inference, {label}: {results[label]:,.0f} steps/s")

    with PeakMemory() as memory:
        start = time.perf_counter()
        train(config.replace(total_timesteps=args.updates * config.batch_size, eval_interval=0, eval_episodes=1),
              None, progress=False)
        elapsed = time.perf_counter() - start
    print(f"train(): {args.updates} updates of {config.batch_size} steps in {elapsed:.1f} s "
          f"({args.updates * config.batch_size / elapsed:,.0f} steps/s incl. updates and one evaluation episode); "
          f"peak resident memory {memory.peak / 2**30:.2f} GB (process + ViZDoom games)")

    best_label = max(results, key=results.get)
    print(f"best rollout setting: {best_label}")
    print(f"rollout_efficiency = {results[best_label] / raw:.2f}")


if __name__ == "__main__":
    main()
