"""Rollout throughput of the course trainer on LunarLander-v3 vs the raw speed of the same vector env.

Measures, in one process and with the trainer's default settings (16 sync envs):

* raw steps/s: the vector env stepped with random actions (no network at all);
* rollout steps/s: :class:`ppo_course.trainer.RolloutCollector` collecting rollouts, policy
  inference and storage included, the update excluded;
* training steps/s: a short real ``train()`` run, updates included, evaluation excluded.

Prints them, the peak resident memory, and last: ``rollout_efficiency = X``, the median over
alternating (raw, rollout) pairs of rollout ÷ raw.

    python benchmarks/throughput.py [--steps 100000] [--pairs 5]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import torch

from ppo_course import PPOConfig, train
from ppo_course.envs import make_vector_env
from ppo_course.networks import build_agent
from ppo_course.trainer import RolloutCollector


def raw_steps_per_second(config: PPOConfig, steps: int) -> float:
    envs = make_vector_env(config.env_id, config.num_envs, config.async_envs, config.norm_reward, config.gamma)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    iterations = steps // config.num_envs
    start = time.perf_counter()
    for _ in range(iterations):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return iterations * config.num_envs / elapsed


def rollout_steps_per_second(config: PPOConfig, steps: int) -> float:
    torch.set_num_threads(max(config.torch_threads, 1))
    envs = make_vector_env(config.env_id, config.num_envs, config.async_envs, config.norm_reward, config.gamma)
    agent = build_agent(config, envs.single_observation_space.shape, envs.single_action_space)
    collector = RolloutCollector(envs, agent, config.num_steps, seed=0)
    rollouts = max(1, steps // config.batch_size)
    start = time.perf_counter()
    for _ in range(rollouts):
        collector.collect()
    elapsed = time.perf_counter() - start
    envs.close()
    return rollouts * config.batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="environment steps per measurement")
    parser.add_argument("--pairs", type=int, default=5, help="alternating (raw, rollout) measurement pairs")
    args = parser.parse_args()
    config = PPOConfig.from_presets(["defaults"], env_id="LunarLander-v3")
    print(f"# {platform.node()} · {platform.machine()} · Python {platform.python_version()} · "
          f"torch {torch.__version__} · {config.num_envs} {'async' if config.async_envs else 'sync'} envs")
    # Alternate the two measurements in short pairs and take the median of the pairs' ratios: the speed of
    # a shared VM drifts by tens of percent from minute to minute, and a pair sees nearly the same machine.
    raw, rollout = [], []
    for _ in range(args.pairs):
        raw.append(raw_steps_per_second(config, args.steps // args.pairs))
        rollout.append(rollout_steps_per_second(config, args.steps // args.pairs))
    raw_sps, rollout_sps = float(np.median(raw)), float(np.median(rollout))
    ratios = np.array(rollout) / np.array(raw)
    result = train(config.replace(total_timesteps=args.steps, eval_interval=0, eval_episodes=1), None,
                   progress=False, tensorboard=False)
    train_sps = result.history[-1]["charts/sps"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"raw vector-env steps/s (random actions): {raw_sps:,.0f}")
    print(f"trainer rollout steps/s (policy inference, no update): {rollout_sps:,.0f}")
    print(f"trainer training steps/s (rollout + update, no evaluation): {train_sps:,.0f}")
    print(f"peak resident memory: {peak_mb:.0f} MB")
    print(f"rollout/raw of each pair: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"rollout_efficiency = {float(np.median(ratios)):.3f}")


if __name__ == "__main__":
    main()
