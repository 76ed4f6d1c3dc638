"""The course speaks of itself alone: no product file refers to the documents it was written from.

The learner has the notebooks, the package, its tests and benchmarks, and the public sources they cite
(the PPO and GAE papers, CleanRL, Stable-Baselines3, ViZDoom's documentation, ...), nothing else. So no
notebook, exercise, solution, docstring, comment, CLI help, test, benchmark or README may point to the
numbered internal documents the course grew from (or their sections), or to the tickets of an internal
tracker. Where such a reference creeps in, cite a public source instead or state the point plainly.

Random-number seeds are a different thing and stay: ``--seed 0``, ``seed=0``, ``seeds 0-2``,
``seed_everything``, "fixed-seed episodes". The patterns below are built from pieces so that this file's
own text does not match them (it is scanned like every other test).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("notebooks", "exercises", "solutions", "ppo_course", "tests", "benchmarks", "README.md")
SKIP_PARTS = {".ipynb_checkpoints", "__pycache__"}

S = "se" + "ed"       # the word, in pieces
I = "is" + "sue"
APOS = "['\u2019]"    # straight or curly apostrophe
DOC_VERBS = ("says|describes|asks|suggests|recommends|specifies|calls|quotes|mentions|documents|keeps|stores"
             "|samples|permutes|divides|requires|wants|lists|targets")

#: (what it catches, pattern). Case-insensitive.
PATTERNS: list[tuple[str, re.Pattern]] = [(why, re.compile(rx, re.I)) for why, rx in [
    ("a numbered document", rf"\b{S}s?[\s_-]*0\d\d\b"),                       # also in a variable's name
    ("a document's section", rf"\b{S}s?(?:{APOS}s)?\s+(?:§|sections?\b)"),
    ("a document's section", rf"§\s*\d[\d.]*\s+of\s+the\s+{S}s?\b"),
    ("the documents", rf"\bthe\s+{S}(?:{APOS}s\b|s\b(?!\s*[\d(]))"),          # but "the seeds 0-2" is RNG
    ("the documents", rf"\bthe\s+{S}\s+(?:{DOC_VERBS})\b"),
    ("the documents", rf"\b{S}\s+doc(?:ument)?s?\b"),
    ("the documents' folder", rf"\b{S}s/[\w.-]"),
    ("the documents", r"\b(?:source|design)\s+documents?\b"),
    ("a tracker's issue", rf"\b{I}s?\s+#?\d+\b"),
    ("a tracker's issue", rf"\bthe\s+{I}{APOS}s\b"),
    ("a tracker's issue", rf"\bthe\s+{I}s?\s+(?:{DOC_VERBS})\b"),
    ("the tracker", rf"\b(?:{I}\s+tracker|internal\s+{I}s?)\b"),
]]


def _product_files() -> list[Path]:
    """Tracked (and new, not ignored) files of the product; every file under PRODUCT without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PRODUCT],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        paths = {ROOT / p for p in out.split("\0") if p}
    except (OSError, subprocess.CalledProcessError):
        paths = {p for name in PRODUCT for p in ([ROOT / name] if (ROOT / name).is_file()
                                                 else (ROOT / name).rglob("*"))}
    return sorted(p for p in paths if p.is_file() and not SKIP_PARTS & set(p.relative_to(ROOT).parts))


def _texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) for what a learner reads: a text file whole, or each notebook cell's source."""
    data = path.read_bytes()
    if b"\0" in data:
        return []                                   # binary (checkpoints, images)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    if path.suffix == ".ipynb":
        return [(f"cell {c}, ", "".join(cell["source"])) for c, cell in enumerate(json.loads(text)["cells"])]
    return [("", text)]


def _hits(text: str) -> list[tuple[int, str]]:
    """(line number, description) of every match; a match may span lines ("... seed\\n000 ...")."""
    return sorted((text.count("\n", 0, m.start()) + 1, f"{why}: {m.group(0)!r}")
                  for why, rx in PATTERNS for m in rx.finditer(text))


FILES = _product_files()


def test_the_patterns_catch_document_references():
    for text in [f"{S} 000", f"{S}\n000 §3", f"{S.title()} 000 §5.2's mask", f"{S}s 000/001 section 2",
                 f"{S}000 = []", f"the {S}'s 12 actions", f"the {S}\u2019s answer", f"as the {S}s say",
                 f"§5.3 of the {S}", f"({S} section 5.1)", f"{S} §3", f"the {S} describes", f"the {S} documents",
                 f"{S}s/000.md", f"{I} 5", f"({I} #12)", f"the {I}'s reference", f"the {I} asks for",
                 f"internal {I}s"]:
        assert _hits(text), text


def test_the_patterns_leave_random_seeds_alone():
    for text in ["--seed 0", "--seed S", "seed=0", "reset(seed=3)", "seed: int = 0", "seeds 0-2", "seeds 0–2",
                 "seeds 0, 1 and 2", "seed 0/1/2", "seed 1's best.pt", "for seeds 0 / 1 / 2", "seed_everything(0)",
                 "fixed-seed episodes", "the seed runs above", "the seeds 0, 1 and 2", "the random seeds",
                 "so that a seed reproduces it", "seed by seed", "| seed | steps |", "SB3's seed-2 run",
                 "the issue is that", "an issue with the clip"]:
        assert not _hits(text), text


def test_there_are_product_files_to_scan():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "notebooks/10_cnn_lstm_agent.ipynb", "tests/test_self_contained.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_no_file_refers_to_internal_documents(path: Path):
    found = []
    for where, text in _texts(path):
        lines = text.splitlines()
        for n, hit in _hits(text):
            found.append(f"{path.relative_to(ROOT).as_posix()}, {where}line {n}: {hit} "
                         f"in {lines[n - 1].strip()[:160]!r}")
    assert not found, ("the learner never had these documents: cite a public source (the PPO paper, CleanRL, "
                       "SB3, ViZDoom's docs, ...) or state the point plainly\n" + "\n".join(found))
