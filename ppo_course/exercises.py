"""Build the learner's exercise notebooks (``exercises/``) from the solution notebooks (``solutions/``).

One source per fact: the solutions are written once, with the learner's part of each task
marked nbgrader-style, and carry a one-line hint on the opening marker::

    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None,
                    gamma=0.99, gae_lambda=0.95):
        \"\"\"...the contract: arguments, shapes, what to return...\"\"\"
        ### BEGIN SOLUTION hint: walk backwards in time and reset the running advantage at episode ends
        ...reference code...
        ### END SOLUTION

``ppo-course exercises build`` (or ``make exercises``) replaces every marked region, markers
included, by a stub at the opening marker's indentation::

        raise NotImplementedError("walk backwards in time and reset ...")  # your code here

and writes the result to ``exercises/`` with outputs cleared, the Colab cells re-stamped for the
new path, and a first cell saying that the file is generated. The checks
(:mod:`ppo_course.checks`) turn the stub's ``NotImplementedError`` into "not implemented yet --
<hint>", so a fresh exercise notebook runs to the end. ``tests/test_exercises.py`` fails when
``exercises/`` differs from what this module generates (the scheme of nbdev and d2l).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .course import stamp, strip_outputs

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:[ \t]+hint:[ \t]*(?P<hint>.*?))?[ \t]*$")
END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
GENERATED_TAG = "ppo-course-generated"
STUB = '{indent}raise NotImplementedError("{hint}")  # your code here'


class ExerciseSourceError(ValueError):
    """A solution notebook's markers are malformed (unclosed, nested, or without a hint)."""


def generated_note(solution_relpath: str) -> str:
    """Markdown of the first cell of every generated exercise notebook."""
    return (f"> **Generated file.** This notebook is generated from `{solution_relpath}` by "
            "`ppo-course exercises build` (or `make exercises`); edit the solution, not this file. "
            "Your work here is yours: the command only rewrites files in `exercises/` when it is run.")


def stub_source(source: str, where: str = "cell") -> tuple[str, int]:
    """Replace each marked solution region of one cell's source by its ``NotImplementedError`` stub.

    Args:
        source: the cell's source text.
        where: names the cell in error messages (``"ex03_gae.ipynb cell 7"``).

    Returns:
        ``(new_source, number_of_regions)``.

    Raises:
        ExerciseSourceError: a region is not closed, is nested, closes without opening, or has no hint
            (or a hint with a double quote, which would end the stub's string).
    """
    out: list[str] = []
    regions, inside = 0, False
    for lineno, line in enumerate(source.splitlines(), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside:
                raise ExerciseSourceError(f"{where}, line {lineno}: BEGIN SOLUTION inside another region")
            hint = (begin["hint"] or "").strip()
            if not hint or '"' in hint or "\\" in hint:
                raise ExerciseSourceError(f"{where}, line {lineno}: the BEGIN SOLUTION marker needs a one-line "
                                          "'hint: ...' without double quotes or backslashes")
            out.append(STUB.format(indent=begin["indent"], hint=hint))
            inside, regions = True, regions + 1
        elif end:
            if not inside:
                raise ExerciseSourceError(f"{where}, line {lineno}: END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ExerciseSourceError(f"{where}: BEGIN SOLUTION is never closed")
    return "\n".join(out), regions


@dataclass
class BuiltExercise:
    """One generated notebook: where it goes, its content, and how many stubs it has."""

    path: Path
    notebook: nbformat.NotebookNode
    regions: int

    def text(self) -> str:
        return nbformat.writes(self.notebook) + "\n"


def build_exercise(solution_path: str | Path, root: str | Path = ROOT) -> BuiltExercise:
    """The exercise notebook generated from one solution notebook (not written to disk).

    Raises:
        ExerciseSourceError: malformed markers, or a solution notebook without any region.
    """
    root, solution_path = Path(root), Path(solution_path).resolve()
    nb = nbformat.read(solution_path, as_version=4)
    total = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source, n = stub_source(cell.source, f"{solution_path.name} cell {index}")
            total += n
    if total == 0:
        raise ExerciseSourceError(f"{solution_path.name} has no '### BEGIN SOLUTION' region")
    strip_outputs(nb)
    target = root / "exercises" / solution_path.name
    relpath = solution_path.relative_to(root).as_posix()
    nb.cells = [c for c in nb.cells if GENERATED_TAG not in c.get("metadata", {}).get("tags", [])]
    stamp(nb, target.relative_to(root).as_posix())
    note = nbformat.v4.new_markdown_cell(generated_note(relpath), metadata={"tags": [GENERATED_TAG]})
    note["id"] = GENERATED_TAG
    nb.cells.insert(0, note)
    return BuiltExercise(target, nb, total)


def solution_paths(root: str | Path = ROOT) -> list[Path]:
    """``solutions/ex*.ipynb``, sorted."""
    return sorted((Path(root) / "solutions").glob("ex*.ipynb"))


def build_all(root: str | Path = ROOT, check: bool = False) -> list[Path]:
    """Generate ``exercises/`` from ``solutions/``.

    Args:
        root: the repository root.
        check: write nothing; return the exercise files that are missing or differ instead.

    Returns:
        The files written (or, with ``check``, the stale ones). Exercise files without a solution
        are reported as stale by ``check`` and removed otherwise.
    """
    root = Path(root)
    built = [build_exercise(p, root) for p in solution_paths(root)]
    wanted = {b.path for b in built}
    orphans = [p for p in (root / "exercises").glob("ex*.ipynb") if p not in wanted]
    changed = [b for b in built if not b.path.is_file() or b.path.read_text() != b.text()]
    if check:
        return sorted([b.path for b in changed] + orphans)
    for b in changed:
        b.path.parent.mkdir(exist_ok=True)
        b.path.write_text(b.text())
    for p in orphans:
        p.unlink()
    return [b.path for b in changed]
