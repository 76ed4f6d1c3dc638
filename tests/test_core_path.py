"""The workshop's core path: notebooks 00-07 run top to bottom with every ``optional`` cell removed.

An instructor who skips the optional sections must not hit a NameError. Each notebook is executed in
fast mode, stripped of its optional cells (``course.core_path``), with the inline backend, and every
executed cell's figures are checked (``figure_checks.figure_problem``). Optional sections are marked
for the learner too: each begins with a heading that says "*(optional)*".
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from figure_checks import figure_problem

from ppo_course.course import OPTIONAL_TAG, core_path, execute, is_optional

ROOT = Path(__file__).resolve().parents[1]
CORE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-7]_*.ipynb"))
MARKER = "*(optional)*"
HEADING = re.compile(r"^#{1,6} ")


def _first_line(cell) -> str:
    return cell.source.strip().splitlines()[0] if cell.source.strip() else ""


@pytest.mark.parametrize("path", CORE_NOTEBOOKS, ids=lambda p: p.name)
def test_optional_sections_are_marked_in_their_headings(path):
    nb = nbformat.read(path, as_version=4)
    previous_optional = False
    for i, cell in enumerate(nb.cells):
        line = _first_line(cell)
        heading = cell.cell_type == "markdown" and HEADING.match(line)
        if heading and MARKER in line:
            assert is_optional(cell), f"{path.name} cell {i}: heading {line!r} says optional but lacks the tag"
        if is_optional(cell) and not previous_optional:  # an optional stretch starts here
            assert heading and MARKER in line, (
                f"{path.name} cell {i}: an optional stretch must open with a heading marked {MARKER!r}, "
                f"not {line[:60]!r}")
        previous_optional = is_optional(cell)


@pytest.mark.parametrize("path", CORE_NOTEBOOKS, ids=lambda p: p.name)
def test_core_path_runs_with_optional_cells_removed(path):
    nb = core_path(nbformat.read(path, as_version=4))
    assert not any(OPTIONAL_TAG in c.metadata.get("tags", []) for c in nb.cells)
    execute(nb, path.parent, fast=True)
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    problems = [f"cell {i}: {p}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
                and (p := figure_problem(c.source, c.outputs, widgets))]
    assert not problems, f"{path.name} (core path): " + "; ".join(problems)
