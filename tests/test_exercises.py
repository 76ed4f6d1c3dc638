"""exercises/ is generated from solutions/ (and up to date), and every exercise runs to the end as shipped."""

from pathlib import Path

import nbformat
import pytest

from ppo_course.course import execute
from ppo_course.exercises import ExerciseSourceError, build_all, build_exercise, solution_paths, stub_source

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = sorted((ROOT / "exercises").glob("ex*.ipynb"))

SOLVED = '''\
def double(x):
    """Return 2 * x."""
    ### BEGIN SOLUTION hint: multiply by two
    y = x + x
    return y
    ### END SOLUTION

print(double(2))'''


def test_a_region_becomes_a_stub_with_its_hint_at_its_indentation():
    source, n = stub_source(SOLVED)
    assert n == 1
    assert source.splitlines()[2] == '    raise NotImplementedError("multiply by two")  # your code here'
    assert "x + x" not in source and "SOLUTION" not in source and source.endswith("print(double(2))")
    namespace = {}
    exec(source.rsplit("\n", 1)[0], namespace)
    with pytest.raises(NotImplementedError, match="multiply by two"):
        namespace["double"](2)


@pytest.mark.parametrize("broken, problem", [
    (SOLVED.replace("### END SOLUTION", ""), "never closed"),
    (SOLVED.replace(" hint: multiply by two", ""), "needs a one-line 'hint"),
    (SOLVED.replace("multiply by two", 'say "two"'), "without double quotes"),
    ("x = 1\n### END SOLUTION", "without BEGIN"),
    (SOLVED.replace("    y = x + x", "    ### BEGIN SOLUTION hint: inner"), "inside another region"),
])
def test_malformed_markers_are_reported_with_their_line(broken, problem):
    with pytest.raises(ExerciseSourceError, match=problem):
        stub_source(broken, "demo cell")


def test_build_writes_a_generated_notebook_with_stubs(tmp_path):
    (tmp_path / "solutions").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo"), nbformat.v4.new_code_cell(SOLVED)]
    nbformat.write(nb, tmp_path / "solutions" / "ex99_demo.ipynb")
    written = build_all(tmp_path)
    assert written == [tmp_path / "exercises" / "ex99_demo.ipynb"]
    out = nbformat.read(written[0], as_version=4)
    assert "generated from `solutions/ex99_demo.ipynb`" in out.cells[0].source
    assert 'raise NotImplementedError("multiply by two")' in out.cells[-1].source
    assert build_all(tmp_path, check=True) == []  # idempotent
    (tmp_path / "exercises" / "ex98_orphan.ipynb").write_text("{}")
    assert build_all(tmp_path, check=True) == [tmp_path / "exercises" / "ex98_orphan.ipynb"]


def test_exercises_folder_is_what_the_generator_writes():
    stale = build_all(ROOT, check=True)
    assert not stale, f"exercises/ is out of date for {[p.name for p in stale]}: run `ppo-course exercises build`"


@pytest.mark.parametrize("solution", solution_paths(ROOT), ids=lambda p: p.name)
def test_every_check_cell_follows_a_task(solution):
    nb = nbformat.read(solution, as_version=4)
    checks = [c for c in nb.cells if "check" in c.get("metadata", {}).get("tags", [])]
    assert checks, f"{solution.name} has no cell tagged 'check'"
    assert build_exercise(solution, ROOT).regions >= 1


def _execute(path: Path) -> nbformat.NotebookNode:
    return execute(nbformat.read(path, as_version=4), ROOT, fast=True, timeout=120, env={"MPLBACKEND": "Agg"})


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", "") if out.output_type == "stream" else str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_exercise_runs_to_the_end_saying_not_implemented_for_each_task(path):
    nb = _execute(path)  # raises CellExecutionError if any cell fails
    checks = [c for c in nb.cells if "check" in c.get("metadata", {}).get("tags", [])]
    assert checks
    for cell in checks:
        assert "not implemented yet" in _text(cell), f"{path.name}: check cell {cell.source!r} printed {_text(cell)!r}"
