"""Notebook 07's landing run over many seeds: does the learner's own PPO land, and with what margin?

Notebook 07 section 3 trains LunarLander-v3 with ``--preset defaults`` for a fixed budget with the
learner's loop, which the notebook proves equal to ``train()`` bit for bit, and judges the final agent on
20 fixed-seed episodes with argmax actions. This script runs ``train()`` with that configuration for each
(seed, budget), one process per run, evaluating every 25,000 steps on the same 20 episodes (evaluation
does not change training). Per run it reports the final evaluation (what the notebook shows), the best
one, the first step at which an evaluation reached 200, and the wall time.

    python benchmarks/lunar_notebook07_seeds.py --seeds 0 1 2 3 4 --budgets 400000 --jobs 2

Prints one line per run as it finishes (and appends it, as JSON, to ``--out`` if given); last, per
budget, ``notebook07_landed[BUDGET] = K/N, final evaluation min X, median Y``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

EVAL_EVERY = 25_000
EVAL_EPISODES = 20
SOLVED = 200.0


def run(seed: int, budget: int) -> dict:
    from ppo_course import PPOConfig, train

    config = PPOConfig.from_presets(["defaults"], seed=seed, total_timesteps=budget, eval_interval=EVAL_EVERY,
                                    eval_episodes=EVAL_EPISODES)
    start = time.perf_counter()
    result = train(config, None, tensorboard=False, progress=False)
    evals = [(int(r["global_step"]), r["eval/mean_return"]) for r in result.history if "eval/mean_return" in r]
    first = next((step for step, ret in evals if ret >= SOLVED), None)
    return {"seed": seed, "budget": budget, "final": evals[-1][1], "best": max(ret for _, ret in evals),
            "first_solved_step": first, "seconds": time.perf_counter() - start, "evals": evals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--budgets", type=int, nargs="+", default=[400_000])
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--out", help="append each run's result to this JSON-lines file")
    args = parser.parse_args()

    print(f"# {platform.node()} · {os.cpu_count()} CPUs · {platform.processor() or platform.machine()} · "
          f"{time.strftime('%Y-%m-%d')} · {args.jobs} runs at a time, one thread each", flush=True)
    runs = sorted(((s, b) for b in args.budgets for s in args.seeds), key=lambda sb: -sb[1])  # longest first
    results: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(run, seed, budget) for seed, budget in runs]):
            r = future.result()
            results.append(r)
            print(f"budget {r['budget']:>7} seed {r['seed']:>2}: final {r['final']:6.1f}  best {r['best']:6.1f}  "
                  f"first >= 200 at {r['first_solved_step'] or '-'}  ({r['seconds']:.0f} s)", flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    for budget in args.budgets:
        finals = [r["final"] for r in results if r["budget"] == budget]
        landed = sum(f >= SOLVED for f in finals)
        print(f"notebook07_landed[{budget}] = {landed}/{len(finals)}, final evaluation min {min(finals):.1f}, "
              f"median {statistics.median(finals):.1f}")


if __name__ == "__main__":
    main()
