"""Every relative link in the course resolves to a file, and every Colab link names a file of the repository.

Covers the Markdown cells of notebooks/, exercises/ and solutions/ and every tracked Markdown file
(README.md included). Math ($...$) is removed first, so that `S[\\pi](s)` is not read as a link.
"""

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from ppo_course.course import badge_links, colab_url

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))
MARKDOWN_FILES = sorted(ROOT / f for f in subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                                                          text=True, check=True).stdout.split())
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:href|src)=\"([^\"]+)\"")
COLAB_PREFIX = colab_url("")


def _markdown(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    return [path.read_text()]


def _links(text: str) -> list[str]:
    text = CODE.sub("", MATH.sub("", text))
    return [a or b for a, b in LINK.findall(text)]


def test_the_link_finder_sees_links_and_skips_math():
    assert _links("see [04](04_x.ipynb), $S[\\pi](s)$, `a[i](j)` and <img src=\"a.png\">") == ["04_x.ipynb", "a.png"]


@pytest.mark.parametrize("path", NOTEBOOKS + MARKDOWN_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    broken, colab = [], []
    for text in _markdown(path):
        for link in _links(text):
            if link.startswith(COLAB_PREFIX):
                colab.append(link)
            elif re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
                continue  # a web address or an anchor in the same file
            elif not (path.parent / unquote(link.split("#")[0])).exists():
                broken.append(link)
    missing = [url for url in colab if not (ROOT / url.removeprefix(COLAB_PREFIX)).is_file()]
    assert not broken, f"{path.relative_to(ROOT)}: relative links to nothing: {broken}"
    assert not missing, f"{path.relative_to(ROOT)}: Colab links to files that do not exist: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_notebook_link_carries_its_colab_badge(path):
    """On Colab a relative link leads nowhere, so each one is followed by the target's badge (stamped)."""
    rel = path.relative_to(ROOT).as_posix()
    unbadged = [c.source for c in nbformat.read(path, as_version=4).cells
                if c.cell_type == "markdown" and badge_links(c.source, rel) != c.source]
    assert not unbadged, f"{rel}: run `python -m ppo_course.course stamp {rel}`; unbadged links in {unbadged[:1]}"


def test_notebooks_send_the_learner_to_their_exercise():
    """Each workshop notebook with an exercise links to it (the README's course map pairs them)."""
    readme = (ROOT / "README.md").read_text()
    pairs = re.findall(r"\(notebooks/(\d\d_\w+\.ipynb)\) \| \[ex\d\d\]\((exercises/ex\d\d_\w+\.ipynb)\)", readme)
    assert len(pairs) == 8
    for notebook, exercise in pairs:
        text = "\n".join(_markdown(ROOT / "notebooks" / notebook))
        assert f"(../{exercise})" in text, f"{notebook} does not link to {exercise}"
