"""The figure checks can fail: a blank image, a drawing cell without an image; and they pass real figures."""

import base64
import io

import matplotlib.pyplot as plt
import numpy as np
from figure_checks import drawing_code, figure_problem


def _png_output(fig) -> dict:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return {"output_type": "display_data", "data": {"image/png": base64.b64encode(buffer.getvalue()).decode()}}


def test_a_real_plot_passes():
    fig, ax = plt.subplots()
    ax.plot(np.sin(np.linspace(0, 6, 50)))
    assert figure_problem("fig, ax = plt.subplots()\nplt.show()", [_png_output(fig)]) is None


def test_a_blank_figure_fails():
    fig = plt.figure()  # nothing drawn: one white page
    assert "blank image" in figure_problem("plt.show()", [_png_output(fig)])


def test_a_drawing_cell_without_an_image_fails():
    assert "holds no image" in figure_problem("fig, ax = plt.subplots()\nax.plot([1, 2])\nplt.show()", [])
    assert "holds no image" in figure_problem("_ = plot_gae(rewards)", [{"output_type": "stream", "text": "ok"}])


def test_defining_a_plot_function_draws_nothing():
    source = "def show(x):\n    fig, ax = plt.subplots()\n    plt.show()\n\nprint('defined')"
    assert "plt" not in drawing_code(source)
    assert figure_problem(source, []) is None


def test_a_blank_gif_frame_fails():
    import imageio.v2 as imageio

    frames = [np.full((20, 20, 3), 255, np.uint8), np.random.default_rng(0).integers(0, 255, (20, 20, 3), np.uint8)]
    buffer = io.BytesIO()
    imageio.mimsave(buffer, frames, format="GIF", duration=100, loop=0)
    html = f'<img src="data:image/gif;base64,{base64.b64encode(buffer.getvalue()).decode()}" width="100">'
    assert "GIF first frame" in figure_problem("show_video(frames)", [{"data": {"text/html": html}}])
