"""All of PPO's hyperparameters in one dataclass, with presets and per-environment defaults.

A configuration is built in layers, each overriding the one before::

    PPOConfig() field defaults
      -> ENV_DEFAULTS[env_id]          (what works for that environment)
      -> PRESETS[name] for each preset (in the order given: "defaults", "explore", ...)
      -> explicit overrides            (keyword arguments / ``--field-name VALUE`` on the CLI)

and validated at the end (:meth:`PPOConfig.validate`), so a bad value fails before
any environment is created. Field names follow CleanRL's ``ppo.py`` (``num_envs``,
``num_steps``, ``clip_coef``, ``gae_lambda``, ...). The presets are
``defaults`` / ``explore`` / ``fast`` / ``debug``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping


class ConfigError(ValueError):
    """A hyperparameter, preset or environment id is not valid. The message names the field."""


def _f(default: Any, help: str) -> Any:
    """A dataclass field whose one-line ``help`` feeds ``--help`` and the docs."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class PPOConfig:
    """PPO hyperparameters (CleanRL's names; README.md maps them to Stable-Baselines3's)."""

    # --- experiment -------------------------------------------------------------
    env_id: str = _f("LunarLander-v3", "Gymnasium environment id, or doom:<scenario> (doom:basic, ...)")
    env_kwargs: dict[str, Any] = _f({}, "keyword arguments for the environment factory, as JSON on the CLI "
                                        "(Doom: frame_skip, frame_stack, resolution, shaping, episode_timeout)")
    seed: int = _f(0, "seed for PyTorch, NumPy and the environments")
    total_timesteps: int = _f(500_000, "environment steps to train for (summed over all envs)")
    device: str = _f("auto", "'auto' (CUDA if available, else CPU), 'cpu' or 'cuda'")
    torch_threads: int = _f(1, "CPU threads PyTorch may use (0 = PyTorch's default); 1 is fastest for small MLPs")
    # --- environments and rollouts ----------------------------------------------
    num_envs: int = _f(16, "parallel environments in the vector env")
    num_steps: int = _f(128, "steps per environment in each rollout (batch = num_envs * num_steps)")
    async_envs: bool = _f(False, "run environments in subprocesses (AsyncVectorEnv) instead of in-process")
    env_groups: int = _f(1, "split the envs into this many vector envs; one steps in a background thread while "
                            "the policy acts for the next (pays when env steps release the GIL, as ViZDoom's do)")
    norm_reward: bool = _f(False, "scale rewards by a running std of the discounted return")
    norm_obs: bool = _f(False, "normalise observations by a running mean and std, clipped to ±10 (flat observations)")
    # --- returns and advantages ---------------------------------------------------
    gamma: float = _f(0.99, "discount factor")
    gae_lambda: float = _f(0.95, "GAE lambda: 0 = one-step TD, 1 = Monte-Carlo")
    # --- optimisation -------------------------------------------------------------
    learning_rate: float = _f(2.5e-4, "Adam learning rate (initial value when annealed)")
    anneal_lr: bool = _f(True, "linearly anneal the learning rate to 0 over training")
    update_epochs: int = _f(4, "epochs (K) over each rollout")
    num_minibatches: int = _f(4, "minibatches per epoch; must divide the batch")
    max_grad_norm: float = _f(0.5, "global gradient-norm clip")
    target_kl: float | None = _f(None, "stop the epochs early when approx_kl exceeds this (None = never)")
    # --- the loss -----------------------------------------------------------------
    clip_coef: float = _f(0.2, "PPO clip range epsilon for the probability ratio")
    clip_vloss: bool = _f(True, "clip the value update around the rollout's values (same epsilon)")
    norm_adv: bool = _f(True, "normalise advantages per minibatch")
    vf_coef: float = _f(0.5, "value-loss coefficient c1")
    ent_coef: float = _f(0.01, "entropy-bonus coefficient c2 (initial value when scheduled)")
    ent_coef_final: float | None = _f(None, "final entropy coefficient; None keeps ent_coef constant")
    ent_warmup_steps: int = _f(0, "steps ent_coef is held before decaying linearly to ent_coef_final")
    # --- network ------------------------------------------------------------------
    hidden_size: int = _f(64, "width of each hidden layer of the MLP")
    num_hidden_layers: int = _f(2, "hidden layers of the MLP")
    shared_trunk: bool = _f(False, "actor and critic share one trunk (else two separate MLPs)")
    use_lstm: bool = _f(False, "pixel agents: NatureCNN -> LSTM (memory) instead of the frame-stack-only CNN")
    lstm_hidden_size: int = _f(256, "LSTM width of the recurrent agent")
    # --- evaluation and checkpoints ----------------------------------------------
    eval_interval: int = _f(25_000, "environment steps between evaluations (0 = only at the end)")
    eval_episodes: int = _f(10, "episodes per evaluation (fixed seeds)")
    eval_stochastic: bool = _f(False, "evaluate by sampling actions instead of the argmax")
    success_threshold: float | None = _f(None, "episode return that counts as a success (LunarLander: 200)")

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_presets(
        cls, presets: Iterable[str] = ("defaults",), env_id: str | None = None, **overrides: Any
    ) -> "PPOConfig":
        """Build a validated config: field defaults -> env defaults -> presets -> overrides.

        Args:
            presets: names from :data:`PRESETS`, applied in order (later ones win).
            env_id: environment id; its :data:`ENV_DEFAULTS` entry is applied first.
            **overrides: any field, e.g. ``learning_rate=3e-4``.

        Raises:
            ConfigError: unknown preset or field, or an invalid value (the message names it).
        """
        env_id = env_id or overrides.get("env_id") or cls.env_id
        values: dict[str, Any] = {"env_id": env_id}
        values.update(env_defaults(env_id))
        for name in presets:
            if name not in PRESETS:
                raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
            values.update(PRESETS[name])
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PPOConfig":
        """Rebuild a config saved by :meth:`to_dict` (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "PPOConfig":
        """A validated copy with some fields changed."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    # -- derived sizes ------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Samples per rollout: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Samples per gradient step: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Rollout + update iterations: ``ceil(total_timesteps / batch_size)``."""
        return max(1, math.ceil(self.total_timesteps / self.batch_size))

    # -- validation -------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name} = {getattr(self, name)!r}: {why}")

        for name in ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches",
                     "hidden_size", "num_hidden_layers", "eval_episodes", "lstm_hidden_size", "env_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be a positive integer")
        for name in ("eval_interval", "ent_warmup_steps", "torch_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "must be a non-negative integer")
        for name in ("learning_rate", "clip_coef", "max_grad_norm"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value <= 0:
                raise bad(name, "must be a positive number")
        if self.learning_rate > 1:  # Adam moves each weight by about lr per step: above 1 nothing can learn
            raise bad("learning_rate", "must be at most 1 (Adam changes each weight by about this much per step; "
                                       "typical values are 1e-4 to 1e-3)")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not _is_finite_number(value) or not 0 <= value <= 1:
                raise bad(name, "must lie in [0, 1]")
        for name in ("vf_coef", "ent_coef"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value < 0:
                raise bad(name, "must be a non-negative number")
        if self.ent_coef_final is not None and (not _is_finite_number(self.ent_coef_final) or self.ent_coef_final < 0):
            raise bad("ent_coef_final", "must be a non-negative number or None")
        if self.target_kl is not None and (not _is_finite_number(self.target_kl) or self.target_kl <= 0):
            raise bad("target_kl", "must be a positive number or None")
        if self.batch_size % self.num_minibatches != 0:
            raise bad("num_minibatches",
                      f"must divide the batch num_envs * num_steps = {self.batch_size}")
        if self.use_lstm and self.num_envs % self.num_minibatches != 0:
            raise bad("num_minibatches", f"must divide num_envs = {self.num_envs} when use_lstm is set "
                                         "(recurrent minibatches are whole environment sequences)")
        if self.num_envs % self.env_groups != 0:
            raise bad("env_groups", f"must divide num_envs = {self.num_envs} (each group is a vector env of equal size)")
        if self.env_groups > 1 and self.norm_reward:
            raise bad("env_groups", "must be 1 with norm_reward (the reward normaliser's statistics live in one vector env)")
        if self.env_groups > 1 and self.norm_obs:
            raise bad("env_groups", "must be 1 with norm_obs (the observation normaliser's statistics live in one "
                                    "vector env)")
        for name in ("use_lstm", "norm_obs"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if not isinstance(self.env_kwargs, dict) or not all(isinstance(k, str) for k in self.env_kwargs):
            raise bad("env_kwargs", "must be a dict of keyword arguments (a JSON object on the CLI)")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise bad("device", "must be 'auto', 'cpu' or 'cuda'")
        if not isinstance(self.env_id, str) or not self.env_id:
            raise bad("env_id", "must be a Gymnasium environment id")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Named bundles of overrides, composable in order.
PRESETS: dict[str, dict[str, Any]] = {
    # The environment's tuned defaults, unchanged.
    "defaults": {},
    # Stuck in a local optimum: a larger entropy bonus and a gentler learning rate
    # (ent_coef up to 0.05, the learning rate down to 1e-4).
    "explore": {"ent_coef": 0.05, "learning_rate": 1e-4},
    # Quicker iteration: a fifth of the budget, fewer evaluation episodes.
    "fast": {"total_timesteps": 100_000, "eval_interval": 20_000, "eval_episodes": 5},
    # Seconds-long smoke test of the whole pipeline: tiny rollouts, one short evaluation.
    "debug": {"total_timesteps": 2_048, "num_envs": 2, "num_steps": 64, "num_minibatches": 2,
              "update_epochs": 2, "eval_interval": 1_024, "eval_episodes": 2},
}

#: Per-environment defaults, applied before presets. LunarLander's land (mean deterministic
#: return >= 200 over 20 episodes) in about 200k steps; benchmarks/RESULTS.md has the runs.
#: gamma 0.999 and lambda 0.98 are RL Zoo's: the landing bonus comes hundreds of steps after
#: the decisions that earn it. Reward normalisation matters most: LunarLander's raw returns
#: run to hundreds, so without it the critic spends most of training catching up with the
#: scale of its targets (advantages stay noisy), and its large gradient also dominates the
#: clipped global gradient norm, shrinking the policy's steps (notebook 08 measures both).
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "LunarLander-v3": {
        "total_timesteps": 400_000,
        "num_envs": 16,
        "num_steps": 128,
        "norm_reward": True,
        "gamma": 0.999,
        "gae_lambda": 0.98,
        "learning_rate": 3e-4,
        "update_epochs": 10,
        "num_minibatches": 16,
        "ent_coef": 0.01,
        "eval_episodes": 20,
        "success_threshold": 200.0,
    },
    "CartPole-v1": {
        "total_timesteps": 100_000,
        "num_envs": 4,
        "success_threshold": 475.0,
    },
    # Continuous actions (Box), the Gaussian agent. The base is CleanRL's ppo_continuous_action.py:
    # lr 3e-4 annealed, gamma 0.99, lambda 0.95, 10 epochs of minibatches of 64 (2048 / 32), clip 0.2,
    # ent_coef 0 (the learned log-std explores on its own; a bonus would only hold it up), vf_coef 0.5,
    # max_grad_norm 0.5, observations and rewards both normalised by running statistics (norm_obs,
    # norm_reward: joint angles, velocities and lidar readings come on very different scales). Each
    # environment changes what RL Zoo's tuned PPO settings (hyperparams/ppo.yml) change; what the presets
    # reach is in benchmarks/RESULTS.md.
    #
    # Pendulum: RL Zoo's tuned values -- 4 envs x 1024 steps, gamma 0.9, lambda 0.95, lr 1e-3,
    # minibatches of 64. The cost is paid now for the state now (angle, speed, torque), so a short
    # horizon loses nothing and gives the critic an easy target. RL Zoo trains 1e5 steps with gSDE
    # exploration, which this package does not have; the budget here leaves room for plain Gaussian
    # noise. Gymnasium defines no success threshold for Pendulum.
    "Pendulum-v1": {
        "total_timesteps": 200_000,
        "num_envs": 4,
        "num_steps": 1024,
        "norm_obs": True,
        "norm_reward": True,
        "gamma": 0.9,
        "gae_lambda": 0.95,
        "learning_rate": 1e-3,
        "update_epochs": 10,
        "num_minibatches": 64,
        "ent_coef": 0.0,
        "eval_interval": 20_000,
        "eval_episodes": 10,
    },
    # LunarLanderContinuous: gamma 0.999 and lambda 0.98 as for the discrete lander (RL Zoo's, for
    # the same reason: the landing bonus comes hundreds of steps after the decisions that earn it),
    # the discrete preset's 16 envs x 128 steps (CleanRL's batch of 2048), CleanRL's minibatches of 64,
    # but 5 epochs instead of 10: 160 gradient steps per 2048 samples, close to RL Zoo's 4 epochs of
    # 256 minibatches per 16384. With 10 epochs the lander landed no sooner and the update took twice
    # as long. Half RL Zoo's budget of 1e6 steps: with these settings it is enough (benchmarks/RESULTS.md).
    # Success: Gymnasium's threshold, 200.
    "LunarLanderContinuous-v3": {
        "total_timesteps": 500_000,
        "num_envs": 16,
        "num_steps": 128,
        "norm_obs": True,
        "norm_reward": True,
        "gamma": 0.999,
        "gae_lambda": 0.98,
        "learning_rate": 3e-4,
        "update_epochs": 5,
        "num_minibatches": 32,
        "ent_coef": 0.0,
        "eval_interval": 50_000,
        "eval_episodes": 20,
        "success_threshold": 200.0,
    },
    # BipedalWalker: RL Zoo's gamma 0.999 (episodes run to 1600 steps, and walking pays off over
    # hundreds of them), lambda 0.95, clip 0.18, minibatches of 64 and budget of 5e6 steps; 16 envs
    # x 256 steps instead of its 32 x 2048, so that a 2-core machine updates often enough.
    # Success: Gymnasium's threshold, 300.
    "BipedalWalker-v3": {
        "total_timesteps": 5_000_000,
        "num_envs": 16,
        "num_steps": 256,
        "norm_obs": True,
        "norm_reward": True,
        "gamma": 0.999,
        "gae_lambda": 0.95,
        "learning_rate": 3e-4,
        "update_epochs": 10,
        "num_minibatches": 64,
        "clip_coef": 0.18,
        "ent_coef": 0.0,
        "eval_interval": 100_000,
        "eval_episodes": 10,
        "success_threshold": 300.0,
    },
    # ViZDoom. Common to both: the CNN+LSTM agent, no reward normalisation -- the shaping
    # coefficients set the reward scale on purpose, and the critic should learn returns in those
    # units -- and advantages normalised per minibatch. Minibatches are whole environment sequences, so
    # num_minibatches divides num_envs. torch_threads 0 (PyTorch's default: every core): the games
    # are child processes that wait while the network runs, so the network may use all the cores.
    # env_groups 2: the 8 games are two vector envs of 4; while the policy acts for one, a background
    # thread steps the other (the rollout drops PyTorch to one thread meanwhile; see
    # pipelined.PipelinedCollector). The update still uses every core. benchmarks/RESULTS.md has the
    # A/B measurements of both choices.
    #
    # basic: one monster, 3 actions, episodes of at most 300 tics (75 agent steps). Native reward
    # (+101 kill, -5 per shot, -1 per tic; best about 95). Scaled by 0.01 at the source (instead
    # of normalising): returns then lie in about [-3, 1], and the critic's gradient no longer
    # swamps the policy's under the shared CNN and the global norm clip.
    # Evaluation still reports the native score (info["episode_stats"]["native_return"]).
    # On a 2-core CPU throughput decides the 15-minute target, and a gradient step on a CNN+LSTM
    # costs more per sample than playing: 8 envs x 64 steps, 3 epochs of 2 sequence minibatches
    # (4 envs x 64 steps = 256 samples), lr 5e-4 annealed; LSTM 128 wide. Smaller minibatches
    # (2 envs x 32 steps) with lr 1e-3 collapsed the policy: most such minibatches hold no kill,
    # and per-minibatch advantage normalisation then blows value noise up to unit size.
    "doom:basic": {
        "env_kwargs": {"shaping": {"native_scale": 0.01}},
        "total_timesteps": 150_000,
        "num_envs": 8,
        "num_steps": 64,
        "norm_reward": False,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "learning_rate": 5e-4,
        "update_epochs": 3,
        "num_minibatches": 2,
        "ent_coef": 0.01,
        "use_lstm": True,
        "lstm_hidden_size": 128,
        "eval_interval": 10_240,
        "eval_episodes": 10,
        "success_threshold": 75.0,
        "torch_threads": 0,
        "env_groups": 2,
    },
    # deadly_corridor: Atari-style settings (the PPO paper, CleanRL's ppo_atari_lstm.py) -- 8 envs
    # x 128 steps, 4 epochs, lr 2.5e-4 annealed -- with the default clipping 0.2, a wider LSTM (512;
    # CleanRL's is 128) and an entropy warm-up: 0.02 held for 500k steps, then decayed to 0.005
    # (explore on purpose first, then let the policy sharpen). The scenario needs millions of steps:
    # more than a CPU hour can give.
    "doom:deadly_corridor": {
        "total_timesteps": 5_000_000,
        "num_envs": 8,
        "num_steps": 128,
        "norm_reward": False,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "learning_rate": 2.5e-4,
        "update_epochs": 4,
        "num_minibatches": 4,
        "ent_coef": 0.02,
        "ent_coef_final": 0.005,
        "ent_warmup_steps": 500_000,
        "use_lstm": True,
        "lstm_hidden_size": 512,
        "eval_interval": 50_000,
        "eval_episodes": 10,
        "torch_threads": 0,
        "env_groups": 2,
    },
}


def env_defaults(env_id: str) -> dict[str, Any]:
    """The :data:`ENV_DEFAULTS` entry for ``env_id`` (empty for other environments)."""
    return copy.deepcopy(ENV_DEFAULTS.get(env_id, {}))  # deep: env_kwargs is a nested dict


def field_help() -> dict[str, tuple[Any, str]]:
    """``{field: (default, one-line help)}`` for every config field, in declaration order."""
    return {f.name: (f.default, f.metadata.get("help", "")) for f in fields(PPOConfig)}
