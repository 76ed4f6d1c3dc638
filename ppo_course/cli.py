"""``ppo-course``: train, evaluate and watch PPO agents, and check the set-up.

    ppo-course train --env LunarLander-v3 --preset defaults --seed 0 --logdir runs/lunar
    ppo-course train --logdir runs/lunar --resume [--total-timesteps 800000]
    ppo-course eval  --logdir runs/lunar --episodes 100 [--stochastic] [--checkpoint latest.pt]
    ppo-course play  --logdir runs/lunar --episodes 5 --save-gif [--gif-fps 30 --gif-dir DIR]
    ppo-course train --env doom:basic --seed 0 --logdir runs/doom_basic [--env-kwargs '{"frame_skip": 4}']
    ppo-course doctor
    ppo-course exercises build [--check]

Every :class:`~ppo_course.config.PPOConfig` field is a ``train`` option (``--learning-rate 3e-4``).
Bad input ends with one ``ppo-course: error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from .config import PRESETS, ConfigError, PPOConfig, field_help

EXIT_ERROR = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, no traceback."""


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"frame_skip\": 4}}', got {text!r}")
    return value


def _optional(parse):
    def parse_optional(text: str):
        return None if text.lower() in ("none", "null", "") else parse(text)
    parse_optional.__name__ = parse.__name__
    return parse_optional


def _field_parser(annotation: Any):
    """argparse ``type=`` for a dataclass field's annotation (``int``, ``float | None``, ``bool``...)."""
    hints = {"int": int, "float": float, "str": str, "bool": _parse_bool,
             "float | None": _optional(float), "int | None": _optional(int), "str | None": _optional(str),
             "dict[str, Any]": _parse_json_object}
    return hints.get(str(annotation), str)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--learning-rate -3e-4`` -> ``--learning-rate=-3e-4``: argparse takes ``-3e-4`` for an option
    otherwise (its negative-number rule does not cover exponents), and the value would be lost."""
    out: list[str] = []
    for token in argv:
        if out and _NEGATIVE_NUMBER.match(token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hyperparameters (override the presets; defaults shown before presets)")
    helps = field_help()
    for f in fields(PPOConfig):
        default, text = helps[f.name]
        flags = ["--" + f.name.replace("_", "-")]
        if f.name == "env_id":
            flags.insert(0, "--env")
        metavar = "BOOL" if str(f.type) == "bool" else None
        group.add_argument(*flags, dest=f.name, type=_field_parser(f.type), default=argparse.SUPPRESS,
                           metavar=metavar, help=f"{text} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a misspelt --learning-rat must be an error, not silently --learning-rate.
    parser = argparse.ArgumentParser(prog="ppo-course", description="A small, readable PPO: train, evaluate, play.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an agent", allow_abbrev=False)
    train.add_argument("--preset", action="append", dest="presets", metavar="NAME",
                       help=f"preset to apply, repeatable, in order; one of {', '.join(PRESETS)} "
                            "(default: defaults)")
    train.add_argument("--logdir", required=True, help="run directory: metrics.csv, TensorBoard events, checkpoints")
    train.add_argument("--resume", action="store_true", help="continue the run in --logdir from its latest.pt")
    train.add_argument("--restart", action="store_true",
                       help="--logdir holds a run: move it aside (LOGDIR.old-DATE-TIME) and start over")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                       help="data-parallel training in N processes on this machine, launched with torchrun "
                            "(each runs --num-envs environments; several machines: see the README)")
    _add_config_options(train)

    for name, helptext in (("eval", "evaluate a trained agent"), ("play", "watch or record a trained agent")):
        p = sub.add_parser(name, help=helptext, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           allow_abbrev=False)
        p.add_argument("--logdir", required=True, help="run directory written by train")
        p.add_argument("--checkpoint", default="best.pt", help="best.pt, latest.pt, or a path to a .pt file")
        p.add_argument("--episodes", type=_positive_int, default=100 if name == "eval" else 5, help="episodes to run")
        p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the argmax")
        p.add_argument("--seed", type=_non_negative_int, default=None,
                       help="seed of the first episode (default: the evaluation seed)")
        p.add_argument("--env", default=None, help="environment id (default: the one the agent was trained on)")
        if name == "play":
            p.add_argument("--save-gif", action="store_true", help="save each episode as an animated GIF")
            p.add_argument("--gif-fps", type=_positive_int, default=30, help="frames per second of the GIFs")
            p.add_argument("--gif-dir", default=None, help="where to write GIFs (default: LOGDIR/gifs)")

    sub.add_parser("doctor", help="check Python, PyTorch, Gymnasium, Box2D, ViZDoom, GPU and headless rendering")

    exercises = sub.add_parser("exercises", help="course maintenance: generate exercises/ from solutions/")
    ex_sub = exercises.add_subparsers(dest="exercises_command", required=True, metavar="ACTION")
    build = ex_sub.add_parser("build", help="rewrite exercises/ from the marked regions in solutions/")
    build.add_argument("--check", action="store_true", help="write nothing; fail if exercises/ is out of date")
    build.add_argument("--root", default=None, help="repository root (default: the one this package lives in)")
    return parser


# --------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .trainer import resolve_device, train

    if args.nproc > 1 and not distributed.launched():
        return _launch_torchrun(args.nproc, args.argv)
    logdir = Path(args.logdir)
    if getattr(args, "device", None) not in (None, "auto"):
        _check_device(args.device)
    if distributed.launched():  # under torchrun: rank 0 reads the run directory, every rank gets its config
        distributed.init(distributed.device_for_rank(resolve_device(getattr(args, "device", "auto"))))
        answer = distributed.from_main(_or_error(_train_config, args) if distributed.is_main() else None)
        if isinstance(answer, str):
            raise CLIError(answer) if distributed.is_main() else SystemExit(EXIT_ERROR)
        config = answer
    else:
        config = _train_config(args)
    stop = _StopRequest(patient=distributed.launched())
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = train(config, logdir, resume=args.resume, progress=not args.no_progress, restart=args.restart,
                       should_stop=lambda: stop.requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result.stopped_early:
        if distributed.is_main():
            print(f"ppo-course: interrupted; {_what_was_kept(logdir)}", file=sys.stderr)
        return 0 if distributed.launched() else 130  # a rank stopped on request is no failure for torchrun
    if not distributed.is_main():
        return 0
    best = f"{result.best_return:.1f}" if result.best_return is not None else "n/a"
    print(f"trained {result.global_step} steps; best evaluation return {best}; "
          f"last evaluation: {result.last_eval}; checkpoints in {logdir}")
    _flag_collapse(result.history, discrete=getattr(result.agent, "n_actions", None) is not None)
    return 0


def _train_config(args: argparse.Namespace) -> PPOConfig:
    """The run's configuration: presets and options, or (``--resume``) the saved run's with the options on top."""
    from .checkpoint import LATEST, load_checkpoint

    overrides = {f.name: getattr(args, f.name) for f in fields(PPOConfig) if hasattr(args, f.name)}
    logdir = Path(args.logdir)
    if not args.resume:
        return PPOConfig.from_presets(args.presets or ["defaults"], **overrides)
    if args.presets:
        raise CLIError("--preset cannot change a resumed run (its settings come from its checkpoint); "
                       "give single options instead, e.g. --total-timesteps")
    if not (logdir / LATEST).is_file():
        raise CLIError(f"nothing to resume: no {LATEST} in {logdir}")
    saved = PPOConfig.from_dict(load_checkpoint(logdir / LATEST)["config"])
    if "env_id" in overrides and overrides["env_id"] != saved.env_id:
        raise CLIError(f"{logdir / LATEST} was trained on {saved.env_id}, not {overrides['env_id']}")
    return saved.replace(**overrides)


def _or_error(fn, *args):
    """``fn(*args)``, or the message of the one-line error it raised (to hand to the other ranks)."""
    from .checkpoint import CheckpointError

    try:
        return fn(*args)
    except (CLIError, ConfigError, CheckpointError, ValueError) as exc:
        return str(exc)


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """``ppo-course train --nproc N ...``: the same command under ``torchrun --standalone --nproc-per-node N``.

    torchrun runs in a session of its own, so that a Ctrl-C (or SIGTERM) reaches this launcher only, which
    passes it on to the ranks: each finishes the current update, rank 0 checkpoints it, and they exit
    cleanly (torchrun, had it been signalled itself, would abort with a traceback). A second Ctrl-C stops
    everything at once. Returns torchrun's exit status, or 130 after an interruption."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "ppo_course.cli", *_without_nproc(argv)]
    proc = subprocess.Popen(command, start_new_session=True)
    signals = []

    def forward(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            for pid in _children(proc.pid):  # the ranks
                os.kill(pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGKILL)  # checkpoint writes are atomic; game engines have watchers

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 130 if signals else status


def _children(pid: int) -> list[int]:
    """The PIDs of ``pid``'s child processes (Linux ``/proc``)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return children


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _flag_collapse(history: list[dict[str, float]], discrete: bool) -> None:
    """A finished run whose policy collapsed says so (the run itself is kept as it is). A Gaussian policy's
    entropy falls (and may go negative) as it learns, so for continuous actions only a diverging value loss counts."""
    from .diagnose import COLLAPSE_SYMPTOMS, diagnose

    columns = {key: [row.get(key, float("nan")) for row in history] for key in set().union(*history)} if history else {}
    symptoms = COLLAPSE_SYMPTOMS if discrete else ("value loss diverging",)
    for finding in diagnose(columns):
        if finding.symptom in symptoms:
            print(f"ppo-course: warning: the policy collapsed. {finding}", file=sys.stderr)


def _check_device(name: str) -> None:
    """``--device`` must name a device this PyTorch can use."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: PyTorch sees no CUDA GPU here (use --device auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The package's own runtime warnings (e.g. a resume that cannot continue exactly) as one line."""
    if issubclass(category, RuntimeWarning) and f"{os.sep}ppo_course{os.sep}" in filename:
        print(f"ppo-course: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


class _StopRequest:
    """The first Ctrl-C or SIGTERM asks the run to stop after the current update (which is then logged and
    checkpointed); a second one stops at once (checkpoint writes are atomic, so nothing is corrupted).

    ``patient`` (a rank under torchrun): every signal only asks. A Ctrl-C reaches a rank twice there, from the
    terminal and again from torchrun, which kills the ranks itself if they do not stop in time."""

    def __init__(self, patient: bool = False):
        self.requested, self.patient = False, patient

    def __call__(self, signum, frame):
        if self.requested:
            if self.patient:
                return
            raise KeyboardInterrupt
        self.requested = True
        from . import distributed

        # Under torchrun a SIGTERM comes from torchrun itself, stopping the ranks (a scheduler's stop, or
        # another rank died): what happened is said in one line at the end, not as a promise here.
        if not distributed.is_main() or (self.patient and signum == signal.SIGTERM):
            return
        print("\nppo-course: stopping after the current update and saving it (press Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)


def _what_was_kept(logdir: Path) -> str:
    """The truth about a run directory after an interruption: its checkpoint's step, or that there is none."""
    from .checkpoint import LATEST, CheckpointError, load_checkpoint

    try:
        step = load_checkpoint(logdir / LATEST)["global_step"]
    except (CheckpointError, FileNotFoundError, OSError):
        return "nothing was saved yet"
    return f"checkpoint at step {step:,} kept in {logdir / LATEST}"


def _load_for_eval(args: argparse.Namespace):
    from .checkpoint import resolve_checkpoint
    from .envs import make_env
    from .trainer import load_agent

    path = resolve_checkpoint(args.logdir, args.checkpoint)
    agent, config = load_agent(path)
    env_id = args.env or config.env_id
    if env_id != config.env_id:
        env = make_env(env_id)
        there = (tuple(env.observation_space.shape), _actions(env.action_space))
        env.close()
        here = (tuple(agent.obs_shape), _actions(agent))
        if there != here:
            raise CLIError(f"{path} was trained on {config.env_id} (observation {here[0]}, {here[1]}); "
                           f"{env_id} has observation {there[0]} and {there[1]}")
        print(f"ppo-course: note: {path} was trained on {config.env_id}; {env_id} is another task with the same "
              "observation and action shapes, so expect a different score", file=sys.stderr)
    return path, agent, config, env_id


def _actions(space_or_agent) -> str:
    """An action space, or the one an agent was built for, in words: "4 actions" or "continuous actions (1,)"."""
    import gymnasium as gym

    if isinstance(space_or_agent, gym.spaces.Space):
        n, shape = getattr(space_or_agent, "n", None), space_or_agent.shape
    else:
        n, shape = space_or_agent.n_actions, (getattr(space_or_agent, "act_dim", None),)
    return f"{int(n)} actions" if n is not None else f"continuous actions {tuple(shape)}"


def _cmd_eval(args: argparse.Namespace) -> int:
    from .config import env_defaults
    from .evaluate import EVAL_SEED, evaluate

    path, agent, config, env_id = _load_for_eval(args)
    seed = EVAL_SEED if args.seed is None else args.seed
    threshold = config.success_threshold if env_id == config.env_id else env_defaults(env_id).get("success_threshold")
    result = evaluate(agent, env_id, args.episodes, deterministic=not args.stochastic, seed=seed,
                      success_threshold=threshold, env_kwargs=config.env_kwargs)
    mode = "stochastic" if args.stochastic else "deterministic"
    print(f"{path} on {env_id} ({mode}): {result}")
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from .evaluate import EVAL_SEED, agent_policy
    from .viz.recording import record_episode, save_video

    path, agent, config, env_id = _load_for_eval(args)
    gif_dir = Path(args.gif_dir) if args.gif_dir else Path(args.logdir) / "gifs"
    if args.save_gif:
        try:
            gif_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot write GIFs to {gif_dir}: {exc.strerror or exc}") from None
    seed0 = EVAL_SEED if args.seed is None else args.seed
    for episode in range(args.episodes):
        # A fresh policy per episode: a recurrent agent starts each one with a blank memory and
        # carries its LSTM state from step to step within it. The recording uses the run's environment
        # settings (frame skip, frame stack, ...) but not its reward shaping, so the return shown is the
        # scenario's own.
        policy = agent_policy(agent, deterministic=not args.stochastic)
        rec = record_episode(policy, env_id, seed=seed0 + episode, env_kwargs=_observation_settings(config, env_id))
        line = f"episode {episode + 1}: return {rec.episode_return:.1f}, {rec.length} steps"
        if args.save_gif:
            out = save_video(rec.frames, gif_dir / f"episode_{episode + 1:03d}_return_{rec.episode_return:.0f}.gif",
                             fps=args.gif_fps)
            line += f" -> {out}"
        print(line)
    if not args.save_gif:
        print("(rendered headless; add --save-gif to keep the episodes as GIFs)")
    return 0


def _observation_settings(config: PPOConfig, env_id: str) -> dict:
    """The run's environment settings without its reward shaping (none for another environment)."""
    if env_id != config.env_id:
        return {}
    return {k: v for k, v in config.env_kwargs.items() if k != "shaping"}


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    return 0 if doctor() else 1


def _cmd_exercises(args: argparse.Namespace) -> int:
    from .exercises import ROOT, build_all

    root = Path(args.root) if args.root else ROOT
    if not (root / "solutions").is_dir():
        raise CLIError(f"no solutions/ folder in {root}: run this in a clone of the course repository")
    paths = build_all(root, check=args.check)
    names = ", ".join(p.relative_to(root).as_posix() for p in paths)
    if args.check:
        if paths:
            raise CLIError(f"exercises/ is out of date ({names}); run `ppo-course exercises build`")
        print("exercises/ is up to date")
    else:
        print(f"wrote {names}" if paths else "exercises/ was already up to date")
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ppo-course`` console script; returns the exit status.

    Called from Python (``main(["eval", ...])``), it leaves the process as it found it: the SIGTERM handler
    and the warning printer it installs for the command are put back when it returns."""
    from . import distributed
    from .checkpoint import CheckpointError
    from .distributed import DistributedError
    from .envs import EnvironmentIdError
    from .trainer import TrainingDiverged

    parser = build_parser()
    raw = _join_negative_values(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(raw)
    args.argv = raw  # as given, for --nproc's relaunch under torchrun
    # `kill`, `timeout` and batch schedulers stop a run with SIGTERM: treat it like Ctrl-C, so that the
    # run keeps a consistent checkpoint and closes its environments (ViZDoom's game processes too).
    previous_showwarning = warnings.showwarning
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    warnings.showwarning = _show_warning
    restore = True
    commands = {"train": _cmd_train, "eval": _cmd_eval, "play": _cmd_play, "doctor": _cmd_doctor,
                "exercises": _cmd_exercises}
    try:
        return commands[args.command](args)
    except DistributedError as exc:  # another rank died: one line, with what the run kept
        for sig in (signal.SIGINT, signal.SIGTERM):  # torchrun is stopping the ranks left: let this one report
            signal.signal(sig, signal.SIG_IGN)
        restore = False  # and keep ignoring them until this process exits
        if args.command == "train" and distributed.is_main():
            print(f"ppo-course: error: {exc}; {_what_was_kept(Path(args.logdir))}", file=sys.stderr)
        return EXIT_ERROR
    except (CLIError, ConfigError, EnvironmentIdError, CheckpointError, TrainingDiverged, FileNotFoundError,
            ValueError) as exc:
        if distributed.is_main():
            print(f"ppo-course: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        kept = f"; {_what_was_kept(Path(args.logdir))}" if args.command == "train" else ""
        if distributed.is_main():
            print(f"ppo-course: interrupted{kept}", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
        if restore:
            signal.signal(signal.SIGTERM, previous_sigterm)
            warnings.showwarning = previous_showwarning


if __name__ == "__main__":
    sys.exit(main())
