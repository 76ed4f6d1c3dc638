"""Record episodes from ``rgb_array`` frames (no display needed) and write them as GIF or MP4 with imageio."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..envs import make_env
from ..evaluate import PolicyFn, env_action


@dataclass
class Recording:
    """One recorded episode."""

    frames: list[np.ndarray]  #: (height, width, 3) uint8 RGB frames, one per step plus the first
    episode_return: float
    length: int  #: environment steps


def record_episode(policy: PolicyFn, env_id: str, seed: int = 0, max_steps: int | None = None,
                   frame_skip: int = 1, env_kwargs: dict | None = None) -> Recording:
    """Play one episode with ``policy`` and keep its rendered frames.

    Args:
        policy: batch policy ``(1, *obs_shape) -> (1,)``, or ``(1, act_dim)`` for continuous actions
            (see :func:`ppo_course.evaluate.agent_policy`).
        env_id: Gymnasium id; the env is made with ``render_mode="rgb_array"``.
        seed: reset seed of the episode.
        max_steps: stop early after this many steps (None: until the episode ends).
        frame_skip: keep every ``frame_skip``-th frame (smaller files; the return is unaffected).
        env_kwargs: keyword arguments for :func:`ppo_course.envs.make_env` (Doom's ``frame_stack``, ...).
    """
    env = make_env(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    try:
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
        total, steps, done = 0.0, 0, False
        while not done and (max_steps is None or steps < max_steps):
            action = np.asarray(policy(obs[None]))[0]
            obs, reward, terminated, truncated, _ = env.step(env_action(action))
            total += float(reward)
            steps += 1
            done = terminated or truncated
            if steps % frame_skip == 0 or done:
                frames.append(env.render())
    finally:
        env.close()
    return Recording(frames, total, steps)


def save_video(frames: list[np.ndarray], path: str | os.PathLike, fps: int = 30) -> Path:
    """Write frames to ``path``; the suffix picks the format (``.gif`` or ``.mp4``).

    Raises:
        ValueError: no frames, or an unsupported suffix.
    """
    import imageio.v2 as imageio

    path = Path(path)
    if not frames:
        raise ValueError("no frames to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    elif suffix == ".mp4":
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    else:
        raise ValueError(f"unsupported video format {suffix!r}: use .gif or .mp4")
    return path


def show_video(frames: list[np.ndarray], fps: int = 30, width: int = 360):
    """An animated GIF of ``frames`` for display in a notebook (works headless and on Colab).

    Returns an ``IPython.display.HTML`` object; the GIF is embedded as base64, so it survives
    nbconvert and needs no file next to the notebook.
    """
    import base64
    import io

    import imageio.v2 as imageio
    from IPython.display import HTML

    buffer = io.BytesIO()
    imageio.mimsave(buffer, frames, format="GIF", duration=1000 / fps, loop=0)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return HTML(f'<img src="data:image/gif;base64,{data}" width="{width}">')


def side_by_side(*recordings: "Recording", labels: list[str] | None = None) -> list[np.ndarray]:
    """Frames of several recordings placed left to right; shorter ones hold their last frame.

    ``labels``, one per recording, are written into the top-left corner of each panel.
    Returns ``(height, sum of widths, 3)`` uint8 frames, as many as the longest recording has.
    """
    if labels is not None and len(labels) != len(recordings):
        raise ValueError(f"{len(labels)} labels for {len(recordings)} recordings")
    panels = [r.frames for r in recordings]
    if labels is not None:
        panels = [[_caption(frame, label) for frame in frames] for frames, label in zip(panels, labels)]
    length = max(len(frames) for frames in panels)
    return [np.concatenate([frames[min(i, len(frames) - 1)] for frames in panels], axis=1) for i in range(length)]


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``frame`` with ``text`` in black on a white box at its top-left corner."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, frame.shape[0] // 16))
    left, top, right, bottom = draw.textbbox((8, 6), text, font=font)
    draw.rectangle((left - 4, top - 3, right + 4, bottom + 3), fill="white")
    draw.text((8, 6), text, fill="black", font=font)
    return np.asarray(image)
