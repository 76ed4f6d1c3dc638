"""Pictures: training curves from ``metrics.csv``, and episode recordings as GIF/MP4."""

from .plots import plot_training_curves
from .recording import record_episode, save_video

__all__ = ["plot_training_curves", "record_episode", "save_video"]
