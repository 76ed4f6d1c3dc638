"""Notebooks are committed clean and carry the one stamped set-up cell. (nbval executes them: see pyproject.)"""

from pathlib import Path

import nbformat
import pytest

from ppo_course.course import BADGE_TAG, SETUP_TAG, badge_source, setup_source
from ppo_course.exercises import GENERATED_TAG

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))


def test_there_are_notebooks():
    assert (ROOT / "notebooks" / "00_welcome_and_setup.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `python -m ppo_course.course stamp {path}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stamped_cells_match_the_template(path):
    nb = nbformat.read(path, as_version=4)
    rel = path.relative_to(ROOT).as_posix()
    if path.parent.name == "exercises":  # generated: a note saying so comes first
        assert nb.cells[0].metadata.get("tags") == [GENERATED_TAG]
        nb.cells = nb.cells[1:]
    assert nb.cells[0].metadata.get("tags") == [BADGE_TAG] and nb.cells[0].source == badge_source(rel)
    assert nb.cells[1].metadata.get("tags") == [SETUP_TAG] and nb.cells[1].source == setup_source()


def test_make_lab_opens_an_existing_notebook():
    makefile = (ROOT / "Makefile").read_text()
    start = next(line.split("?=")[1].strip() for line in makefile.splitlines() if line.startswith("START_NOTEBOOK"))
    assert (ROOT / start).is_file()


def test_readme_course_map_links_every_workshop_notebook():
    readme = (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"(notebooks/{path.name})" in readme, f"README's course map lacks {path.name}"
