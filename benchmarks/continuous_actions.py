"""Continuous-action PPO (Gaussian policy): does ``--preset defaults`` reach its target, per seed?

For each seed, ``train()`` with the environment's defaults (``ppo_course.config.ENV_DEFAULTS``) for
``--budget`` steps, evaluating every ``--eval-every`` steps on ``--episodes`` fixed-seed episodes with
the policy's mean action (deterministic). One process per run, ``--jobs`` at a time, one thread each.

    python benchmarks/continuous_actions.py --env Pendulum-v1 --seeds 0 1 2 --budget 200000 --target -200
    python benchmarks/continuous_actions.py --env LunarLanderContinuous-v3 --seeds 0 1 2 --budget 500000 --target 200

Prints one line per run as it finishes (best and final evaluation, first step at or above the target,
wall time), then ``continuous_reached[ENV] = K/N``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed


def run(env_id: str, seed: int, budget: int, eval_every: int, episodes: int, target: float) -> dict:
    from ppo_course import PPOConfig, train

    config = PPOConfig.from_presets(["defaults"], env_id=env_id, seed=seed, total_timesteps=budget,
                                    eval_interval=eval_every, eval_episodes=episodes)
    start = time.perf_counter()
    result = train(config, None, tensorboard=False, progress=False)
    evals = [(int(r["global_step"]), r["eval/mean_return"]) for r in result.history if "eval/mean_return" in r]
    return {"seed": seed, "final": evals[-1][1], "best": max(ret for _, ret in evals),
            "first": next((step for step, ret in evals if ret >= target), None),
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--eval-every", type=int, default=20_000)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    print(f"# {platform.node()} · {os.cpu_count()} CPUs · {time.strftime('%Y-%m-%d')} · {args.env}, "
          f"{args.budget} steps, target {args.target:g}, {args.jobs} runs at a time", flush=True)
    reached = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run, args.env, seed, args.budget, args.eval_every, args.episodes, args.target)
                   for seed in args.seeds]
        for future in as_completed(futures):
            r = future.result()
            reached += r["first"] is not None
            print(f"seed {r['seed']}: best {r['best']:8.1f}  final {r['final']:8.1f}  first >= {args.target:g} at "
                  f"{r['first'] or '-'}  ({r['seconds']:.0f} s)", flush=True)
    print(f"continuous_reached[{args.env}] = {reached}/{len(args.seeds)}")


if __name__ == "__main__":
    main()
