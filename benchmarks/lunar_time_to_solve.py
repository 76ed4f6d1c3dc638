"""Time to solve LunarLander (discrete or continuous): this course's trainer vs Stable-Baselines3's PPO,
same machine, same protocol.

Protocol (both libraries): evaluate every 25,000 environment steps on 20 fixed-seed episodes
with the deterministic (argmax) policy, using the same evaluation function and seeds; the run
is *solved* at the first evaluation with mean return >= 200, and stops there. Wall-clock to
solve counts training only (evaluation time is excluded for both). Each (library, seed) run
is a fresh subprocess, so its peak resident memory is its own.

Stable-Baselines3 uses RL Zoo's hyperparameters for the environment: for both landers 16 envs,
n_steps 1024, batch 64, gamma 0.999, gae_lambda 0.98, 4 epochs, ent_coef 0.01, and for
LunarLanderContinuous-v3 also ``normalize: true`` (``VecNormalize`` of observations and rewards; its
evaluation sees observations normalised with the frozen statistics); other settings at SB3's defaults.
The course trainer uses ``--preset defaults`` for the environment.

    python benchmarks/lunar_time_to_solve.py --seeds 0 1 2 [--max-steps 1000000]
    python benchmarks/lunar_time_to_solve.py --env LunarLanderContinuous-v3 --parallel

``--parallel`` runs each seed's two libraries at the same time, one per core (on a 2-core machine, what
keeps a third process's load from favouring either). Prints a table, then last:
``time_to_solve_ratio course/sb3 = X`` (``time_to_solve_ratio_continuous`` for the continuous lander),
the median over seeds.
Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

ENV_ID = "LunarLander-v3"  # or LunarLanderContinuous-v3 (--env)
EVAL_EVERY = 25_000
EVAL_EPISODES = 20
SOLVED = 200.0


class Solved(Exception):
    pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_course(seed: int, max_steps: int, env_id: str) -> dict:
    from ppo_course import PPOConfig, train

    config = PPOConfig.from_presets(["defaults"], env_id=env_id, seed=seed, eval_interval=EVAL_EVERY,
                                    eval_episodes=EVAL_EPISODES, total_timesteps=max(max_steps, 400_000))
    found: dict = {}

    def on_update(row: dict) -> None:
        if row.get("eval/mean_return", float("nan")) >= SOLVED:
            found.update(steps=int(row["global_step"]), seconds=row["time_s"] - row["charts/eval_time_s"],
                         eval_return=row["eval/mean_return"])
            raise Solved
        if row["global_step"] >= max_steps:
            raise Solved

    try:
        train(config, None, progress=False, callback=on_update)
    except Solved:
        pass
    return found


def run_sb3(seed: int, max_steps: int, env_id: str) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from ppo_course.evaluate import evaluate_policy

    class EvalCallback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_eval, self.eval_time, self.start, self.found = EVAL_EVERY, 0.0, time.perf_counter(), {}

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next_eval:
                return True
            self.next_eval += EVAL_EVERY
            t0 = time.perf_counter()
            norm = self.model.get_vec_normalize_env()  # frozen statistics (None without normalize)
            policy = (lambda obs: self.model.predict(norm.normalize_obs(obs) if norm else obs, deterministic=True)[0])
            result = evaluate_policy(policy, env_id, EVAL_EPISODES)
            self.eval_time += time.perf_counter() - t0
            if result.mean_return >= SOLVED:
                self.found = {"steps": int(self.num_timesteps), "eval_return": result.mean_return,
                              "seconds": time.perf_counter() - self.start - self.eval_time}
                return False
            return self.num_timesteps < max_steps

    envs = make_vec_env(env_id, n_envs=16, seed=seed)
    if env_id == "LunarLanderContinuous-v3":  # RL Zoo: normalize: true
        envs = VecNormalize(envs, gamma=0.999)
    model = PPO("MlpPolicy", envs, n_steps=1024, batch_size=64, gamma=0.999, gae_lambda=0.98, n_epochs=4,
                ent_coef=0.01, seed=seed, device="cpu", verbose=0)
    callback = EvalCallback()
    model.learn(total_timesteps=max_steps + 16 * 1024, callback=callback)
    return callback.found


def worker(library: str, seed: int, max_steps: int, env_id: str) -> None:
    found = (run_course if library == "course" else run_sb3)(seed, max_steps, env_id)
    print(json.dumps({"library": library, "seed": seed, **found, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="give up after this many steps")
    parser.add_argument("--libraries", nargs="+", default=["course", "sb3"], choices=["course", "sb3"])
    parser.add_argument("--env", default=ENV_ID, choices=[ENV_ID, "LunarLanderContinuous-v3"])
    parser.add_argument("--parallel", action="store_true", help="run each seed's libraries at the same time")
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.max_steps, args.env)
        return

    print(f"# {platform.node()} · {platform.processor() or platform.machine()} · Python {platform.python_version()}")
    print(f"# {args.env}, {'libraries side by side' if args.parallel else 'one run at a time'}")
    results = []
    for seed in args.seeds:
        command = lambda library: [sys.executable, __file__, "--worker", library, str(seed),  # noqa: E731
                                   "--max-steps", str(args.max_steps), "--env", args.env]
        if args.parallel:
            procs = [subprocess.Popen(command(lib), stdout=subprocess.PIPE, text=True) for lib in args.libraries]
            outputs = [proc.communicate()[0] for proc in procs]
        else:  # interleaved, so machine noise hits both alike
            outputs = [subprocess.run(command(lib), capture_output=True, text=True, check=True).stdout
                       for lib in args.libraries]
        for library, out in zip(args.libraries, outputs):
            row = json.loads(out.strip().splitlines()[-1])
            results.append(row)
            solved = f"{row['steps']:>9,d} steps {row['seconds']:>7.1f} s" if "steps" in row else "   not solved"
            print(f"{library:>6} seed {seed}: {solved}   peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)

    print()
    print(f"| library | seed | steps to solve | wall-clock to solve (s) | peak RSS (MB) |")
    print(f"|---|---|---|---|---|")
    for row in results:
        steps = f"{row['steps']:,}" if "steps" in row else "not solved"
        secs = f"{row['seconds']:.1f}" if "seconds" in row else "-"
        print(f"| {row['library']} | {row['seed']} | {steps} | {secs} | {row['peak_rss_mb']:.0f} |")
    ratios = []
    for seed in args.seeds:
        by = {r["library"]: r for r in results if r["seed"] == seed}
        if all("seconds" in by.get(lib, {}) for lib in ("course", "sb3")):
            ratios.append(by["course"]["seconds"] / by["sb3"]["seconds"])
    for library in args.libraries:
        steps = [r["steps"] for r in results if r["library"] == library and "steps" in r]
        if steps:
            print(f"median steps to solve, {library}: {statistics.median(steps):,.0f}")
    name = "time_to_solve_ratio" + ("_continuous" if args.env != ENV_ID else "")
    if ratios:
        print(f"{name} course/sb3 = {statistics.median(ratios):.3f}")
    else:
        print(f"{name} course/sb3 = n/a (a library did not solve within --max-steps)")


if __name__ == "__main__":
    main()
