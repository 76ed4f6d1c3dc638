"""Course plumbing: fast mode, training budgets, where runs are written, and the stamped set-up cell.

Fast mode (``PPO_COURSE_FAST=1``, set by ``make test``) shrinks every training budget in the
notebooks so that they run top to bottom in seconds; learners never need it.

The first two cells of every notebook -- an "Open in Colab" badge and a set-up cell that
installs the package on Colab and does nothing locally -- come from one template here. Run

    python -m ppo_course.course stamp notebooks/*.ipynb solutions/*.ipynb

after changing the template or adding a notebook; ``tests/test_notebooks.py`` fails when a
notebook's stamped cells differ from the template.
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from pathlib import Path

FAST_ENV = "PPO_COURSE_FAST"
RUNS_ENV = "PPO_COURSE_RUNS"


def fast_mode() -> bool:
    """True when ``PPO_COURSE_FAST`` is set to something other than ``""``/``"0"``."""
    return os.environ.get(FAST_ENV, "") not in ("", "0")


def budget(full, fast):
    """``fast`` in fast mode, else ``full`` -- e.g. ``budget(full=400_000, fast=8_192)`` steps."""
    return fast if fast_mode() else full


def project_root(start: str | os.PathLike | None = None) -> Path | None:
    """The ppo-course checkout that contains ``start`` (default: the working directory), or None.

    A checkout is recognised by its ``pyproject.toml`` naming the project ``ppo-course``; the
    search walks up from ``start``, so a notebook (whose kernel runs in ``notebooks/``) and a shell
    at the root find the same folder.
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        try:
            if re.search(r'^name\s*=\s*"ppo-course"', pyproject.read_text(), re.M):
                return folder
        except OSError:
            continue
    return None


def runs_dir(*parts: str, create: bool = True) -> Path:
    """The one folder a course run writes to (training runs, GIFs, ViZDoom's files): an absolute path.

    ``$PPO_COURSE_RUNS`` if set; otherwise ``runs/`` at the root of the ppo-course checkout that
    contains the working directory (git-ignored), so notebooks never write beside the lessons;
    outside a checkout (Colab, a practitioner's own folder) ``./runs``. ``parts`` name a sub-folder:
    ``runs_dir("07_lunar")`` is ``<root>/runs/07_lunar``. The folder is created unless
    ``create=False``.
    """
    base = os.environ.get(RUNS_ENV, "")
    if base:
        path = Path(base).expanduser().resolve()
    else:
        path = (project_root() or Path.cwd().resolve()) / "runs"
    path = path.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------
# The stamped cells
# --------------------------------------------------------------------------------------
BADGE_TAG = "ppo-course-badge"
SETUP_TAG = "ppo-course-setup"
# Colab already has Jupyter, ipywidgets and pandas (the `course` extra), pinned to versions that work
# there: install only what it lacks, the package and its Doom extra.
COLAB_EXTRAS = "doom"

SETUP_TEMPLATE = '''\
# Set-up: on Colab, install the course package; locally (after `make lab`) this does nothing.
# (Stamped from ppo_course/course.py -- edit the template there, not here.)
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "ppo-course[{extras}] @ git+{repo}"], check=True)'''

BADGE_TEMPLATE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def repository_url(pyproject: str | os.PathLike | None = None) -> str:
    """The project's repository URL: ``[project.urls] Repository`` in pyproject.toml (its one home)."""
    path = Path(pyproject) if pyproject else Path(__file__).resolve().parents[1] / "pyproject.toml"
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', path.read_text(), re.M)
    if not match:
        raise ValueError(f"no [project.urls] Repository in {path}")
    return match.group(1)


def colab_url(notebook_relpath: str, repo: str | None = None) -> str:
    """Colab's URL for a notebook path relative to the repository root (GitHub-hosted)."""
    repo = repo or repository_url()
    slug = repo.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{slug}/blob/main/{notebook_relpath}"


def setup_source(repo: str | None = None) -> str:
    return SETUP_TEMPLATE.format(extras=COLAB_EXTRAS, repo=repo or repository_url())


def badge_source(notebook_relpath: str, repo: str | None = None) -> str:
    return BADGE_TEMPLATE.format(url=colab_url(notebook_relpath, repo))


# A relative Markdown link to a notebook, and the Colab badge that may already follow it.
_NOTEBOOK_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>(?![a-z]+:)[^)\s]+\.ipynb)\)"
                            r"(?: \[!\[Open In Colab\]\([^)]*\)\]\([^)]*\))?")


def badge_links(markdown: str, notebook_relpath: str, repo: str | None = None) -> str:
    """Follow every relative link to a notebook with that notebook's "Open in Colab" badge.

    A relative link such as ``[ex04](../exercises/ex04_ppo_loss.ipynb)`` works in JupyterLab, VS Code
    and on GitHub, but not on Colab, which opens one notebook at a time; there the badge is the link.
    ``notebook_relpath`` is the linking notebook's path from the repository root. Idempotent.
    """
    def with_badge(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(notebook_relpath), match["target"]))
        return f"[{match['text']}]({match['target']}) " + badge_source(target, repo)

    return _NOTEBOOK_LINK.sub(with_badge, markdown)


def stamp(nb, notebook_relpath: str, repo: str | None = None):
    """Put the badge and set-up cells (tagged) at the top of a notebook, replacing old ones, and follow
    every relative notebook link with its Colab badge (:func:`badge_links`); returns the notebook."""
    import nbformat

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = badge_links(cell.source, notebook_relpath, repo)

    nb.cells = [c for c in nb.cells if not ({BADGE_TAG, SETUP_TAG} & set(c.get("metadata", {}).get("tags", [])))]
    badge = nbformat.v4.new_markdown_cell(badge_source(notebook_relpath, repo), metadata={"tags": [BADGE_TAG]})
    setup = nbformat.v4.new_code_cell(setup_source(repo), metadata={"tags": [SETUP_TAG]})
    badge["id"], setup["id"] = BADGE_TAG, SETUP_TAG  # fixed ids: re-stamping changes nothing
    nb.cells = [badge, setup, *nb.cells]
    return nb


OPTIONAL_TAG = "optional"  # cell tag: outside the 90-minute core path (an instructor may skip it)


def is_optional(cell) -> bool:
    """True for a cell tagged ``optional`` (in its metadata's ``tags``)."""
    return OPTIONAL_TAG in cell.get("metadata", {}).get("tags", [])


def core_path(nb):
    """A copy of notebook ``nb`` without its ``optional`` cells: the workshop's core path."""
    import copy

    core = copy.deepcopy(nb)
    core.cells = [c for c in core.cells if not is_optional(c)]
    return core


def execute(nb, folder: str | os.PathLike, fast: bool = True, timeout: int = 600, env: dict | None = None):
    """Run notebook ``nb`` top to bottom in a fresh kernel whose working directory is ``folder``.

    ``fast`` sets ``PPO_COURSE_FAST`` for the kernel; ``env`` adds other variables. The process's own
    environment is restored afterwards. Needs ``nbclient`` (the ``dev`` extra). Returns ``nb``, with
    outputs; raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell.
    """
    from nbclient import NotebookClient

    settings = {FAST_ENV: "1" if fast else "0", **(env or {})}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return nb


def strip_outputs(nb):
    """Remove outputs and execution counts (notebooks are committed clean)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def stamp_files(paths: list[str], root: str | os.PathLike | None = None) -> None:
    """Stamp and clean notebook files in place (paths relative to the repository root)."""
    import nbformat

    root = Path(root) if root else Path(__file__).resolve().parents[1]
    for path in paths:
        p = Path(path).resolve()
        nb = nbformat.read(p, as_version=4)
        stamp(strip_outputs(nb), p.relative_to(root).as_posix())
        nbformat.write(nb, p)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "stamp":
        sys.exit("usage: python -m ppo_course.course stamp NOTEBOOK.ipynb ...")
    stamp_files(sys.argv[2:])
