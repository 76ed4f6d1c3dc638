"""Pictures: training curves, a live dashboard, interactive explorers, episode recordings (GIF/MP4)."""

from .dashboard import LiveDashboard
from .explorers import clipping_explorer, gae_explorer, plot_clipped_objective, plot_gae
from .plots import plot_training_curves
from .recording import record_episode, save_video, show_video, side_by_side

__all__ = ["LiveDashboard", "clipping_explorer", "gae_explorer", "plot_clipped_objective", "plot_gae",
           "plot_training_curves", "record_episode", "save_video", "show_video", "side_by_side"]
