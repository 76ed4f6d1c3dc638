"""Figures are tested: a pytest plugin (``-p figure_checks`` in pyproject's addopts) and its helpers.

Notebook kernels run with matplotlib's inline backend, which really renders (``MPLBACKEND=Agg``
would make ``plt.show()`` draw nothing). After every notebook cell nbval executes, and every cell
that ``tests/test_core_path.py`` executes, :func:`figure_problem` fails the test when

* an image in the cell's output is blank (a PNG, or the first or last frame of a GIF, whose pixels
  hardly vary), or
* the cell draws a figure (calls ``plt.show()``, ``plt.subplots(...)``, a ``plot_*`` function, an
  explorer or ``show_video``, outside a function definition) and shows no image at all.
"""

from __future__ import annotations

import ast
import base64
import io
import os
import re

import numpy as np
import pytest

DRAWS = re.compile(r"plt\.show\(|plt\.subplots\(|plt\.figure\(|\bplot_\w+\(|_explorer\(|show_video\(")
GIF = re.compile(r'src="data:image/gif;base64,([A-Za-z0-9+/=]+)"')
BLANK_STD = 2.0  # grey levels (0-255): a page of one colour, give or take anti-aliasing noise


def pytest_configure(config):
    # Kernels inherit this process's environment: without MPLBACKEND they use the inline backend.
    os.environ.pop("MPLBACKEND", None)


def drawing_code(source: str) -> str:
    """The cell's source without function and class bodies (defining a plot function draws nothing)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: look at everything
        return source
    return "\n".join(ast.get_source_segment(source, node) or "" for node in tree.body
                     if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def _pixel_std(image_bytes: bytes, frame: int | None = None) -> float:
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as image:
        if frame is not None:
            image.seek(frame % getattr(image, "n_frames", 1))
        return float(np.asarray(image.convert("L"), dtype=np.float64).std())


def images(outputs) -> list[tuple[str, float]]:
    """``(kind, pixel standard deviation)`` for every PNG and every GIF's first and last frame."""
    found = []
    for out in outputs:
        data = out.get("data", {}) if hasattr(out, "get") else {}
        if "image/png" in data:
            found.append(("PNG", _pixel_std(base64.b64decode(data["image/png"]))))
        for gif in GIF.findall(str(data.get("text/html", ""))):
            raw = base64.b64decode(gif)
            found += [("GIF first frame", _pixel_std(raw, 0)), ("GIF last frame", _pixel_std(raw, -1))]
    return found


def widget_outputs(outputs, widget_state: dict) -> list:
    """What the Output widgets inside a cell's widgets show (``interact`` draws its figure into one).

    nbclient routes such output into the notebook's widget state, not the cell's outputs; nbval does
    not, so for nbval ``widget_state`` is empty and this returns nothing extra.
    """
    found, todo = [], []
    for out in outputs:
        model = out.get("data", {}).get("application/vnd.jupyter.widget-view+json", {}).get("model_id")
        todo += [model] if model else []
    while todo:
        state = widget_state.get(todo.pop(), {}).get("state", {})
        found += state.get("outputs", [])
        todo += [child.removeprefix("IPY_MODEL_") for child in state.get("children", [])]
    return found


def figure_problem(source: str, outputs, widget_state: dict | None = None) -> str | None:
    """What is wrong with the figures of one executed cell, or None."""
    shown = images(list(outputs) + widget_outputs(outputs, widget_state or {}))
    blank = [kind for kind, std in shown if std < BLANK_STD]
    if blank:
        return f"blank image ({', '.join(blank)}: pixel standard deviation < {BLANK_STD})"
    if not shown and DRAWS.search(drawing_code(source)):
        return "the cell draws a figure but its output holds no image"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    outputs = getattr(item, "test_outputs", None)  # nbval's cell items keep what the cell printed
    if outputs is not None:
        problem = figure_problem(item.cell.source, outputs)
        if problem:
            pytest.fail(f"cell {item.name}: {problem}", pytrace=False)
    return result
