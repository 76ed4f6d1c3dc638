"""Recording to GIF and MP4 from rgb_array frames, and training curves from metrics.csv."""

import numpy as np
import pytest

from ppo_course import PPOConfig, train
from ppo_course.viz import plot_training_curves, record_episode, save_video


def test_record_and_save_gif_and_mp4(tmp_path):
    rng = np.random.default_rng(0)
    rec = record_episode(lambda obs: rng.integers(4, size=len(obs)), "LunarLander-v3", seed=0, max_steps=30)
    assert rec.length == 30 and len(rec.frames) == 31 and rec.frames[0].dtype == np.uint8
    import imageio.v3 as iio
    for suffix in (".gif", ".mp4"):
        path = save_video(rec.frames, tmp_path / f"episode{suffix}", fps=30)
        frames = iio.imread(path, index=None)
        assert frames.shape[0] >= 30 and frames.shape[1:3] == rec.frames[0].shape[:2]


def test_training_curves_from_a_real_run(tmp_path):
    train(PPOConfig.from_presets(["debug"]), tmp_path, progress=False, tensorboard=False)
    fig = plot_training_curves(tmp_path, success_threshold=200)
    titled = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titled) == 8 and all(ax.get_xlabel() == "environment steps" for ax in titled)
    assert any(len(line.get_xdata()) > 0 for ax in titled for line in ax.lines)


def test_clipped_objective_curve_is_the_package_loss():
    from ppo_course.viz.explorers import clipped_objective_curve

    clipped, unclipped = clipped_objective_curve(np.array([0.5, 1.0, 1.5]), advantage=1.0, clip_coef=0.2)
    assert clipped == pytest.approx([0.5, 1.0, 1.2]) and unclipped == pytest.approx([0.5, 1.0, 1.5])
    clipped_neg, _ = clipped_objective_curve(np.array([0.5, 1.5]), advantage=-1.0, clip_coef=0.2)
    assert clipped_neg == pytest.approx([-0.8, -1.5])


def test_dashboard_collects_rows_and_draws():
    from ppo_course.viz import LiveDashboard

    dash = LiveDashboard(every=2, success_threshold=200)
    for i in range(4):
        row = {"global_step": 100.0 * (i + 1), "train/entropy": 1.3 - 0.1 * i}
        if i == 3:
            row["eval/mean_return"] = 50.0
        dash(row)
    dash.close()
    assert len(dash.data["train/entropy"]) == 4 and np.isnan(dash.data["eval/mean_return"][0])
    assert any(ax.lines for ax in dash.fig.axes)


def test_side_by_side_labels_each_panel_in_its_top_left_corner():
    from ppo_course.viz import side_by_side
    from ppo_course.viz.recording import Recording

    grey = np.full((120, 160, 3), 90, np.uint8)
    short, long = Recording([grey] * 2, 0.0, 1), Recording([grey] * 3, 0.0, 2)
    plain = side_by_side(short, long)
    labelled = side_by_side(short, long, labels=["left", "right"])
    assert len(labelled) == 3 and labelled[0].shape == (120, 320, 3)
    for panel in (slice(0, 160), slice(160, 320)):
        corner = labelled[2][:30, panel][:, :80]
        assert (corner == 255).any() and (corner < 60).any()  # white box, dark text
    assert np.array_equal(labelled[2][60:], plain[2][60:])  # below the caption nothing changed
    with pytest.raises(ValueError, match="2 labels for 1 recordings"):
        side_by_side(short, labels=["a", "b"])
