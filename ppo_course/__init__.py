"""ppo_course: a small, readable PPO in PyTorch, and the helpers of the PPO course.

The pieces, in the order data flows through them::

    config (PPOConfig) -> envs, networks -> trainer (buffer, advantages, losses, schedules)
        -> logging, checkpoint -> evaluate, viz
"""

from .advantages import compute_gae, discounted_returns
from .config import ConfigError, PPOConfig, PRESETS
from .diagnose import diagnose
from .evaluate import EvalResult, evaluate
from .losses import approx_kl, clip_fraction, clipped_surrogate, explained_variance, ppo_loss, value_loss
from .networks import GaussianActorCritic, MLPActorCritic, layer_init
from .trainer import TrainingDiverged, TrainResult, load_agent, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "EvalResult", "GaussianActorCritic", "MLPActorCritic", "PPOConfig", "PRESETS", "TrainResult",
    "TrainingDiverged",
    "approx_kl", "clip_fraction", "diagnose", "clipped_surrogate", "compute_gae", "discounted_returns", "evaluate",
    "explained_variance", "layer_init", "load_agent", "ppo_loss", "train", "value_loss",
]
