"""How long the workshop's core path through notebooks 00-07 takes.

For each notebook: words of prose and non-blank code lines, split into the core path and the
``optional`` cells (cell tag ``optional``; an instructor skips them), and the seconds the core
cells take to execute in full mode (every training budget at its real size), run top to bottom
with the optional cells removed, exactly as ``tests/test_core_path.py`` runs them in fast mode.
The stamped badge and set-up cells are not counted.

The estimate of a notebook's core time is

    core_minutes = core_words / 180 + core_code_lines / 10 + core_execution_seconds / 60

(reading at 180 words a minute, careful prose with formulas; reading, typing or changing code at
10 lines a minute); optional minutes are the same without execution. Last line:
``workshop_core_minutes = X`` over notebooks 00-07 (the target is X <= 90).

    python benchmarks/workshop_time.py              # execute the core cells in full mode (minutes)
    python benchmarks/workshop_time.py --no-execute # counts only
    python benchmarks/workshop_time.py --write-headers  # also write each notebook's time line
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ppo_course.course import BADGE_TAG, SETUP_TAG, core_path, execute, is_optional  # noqa: E402

WORDS_PER_MINUTE = 180
CODE_LINES_PER_MINUTE = 10
CORE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-7]_*.ipynb"))
TIME_LINE = re.compile(r"\*\*Time\.\*\*.*?\.(?=\s|$)", re.S)  # up to the sentence's full stop


def counted(cell) -> bool:
    return not ({BADGE_TAG, SETUP_TAG} & set(cell.get("metadata", {}).get("tags", [])))


def words(cell) -> int:
    return len(cell.source.split()) if cell.cell_type == "markdown" else 0


def code_lines(cell) -> int:
    return sum(1 for line in cell.source.splitlines() if line.strip()) if cell.cell_type == "code" else 0


def execute_core(path: Path, fast: bool) -> float:
    """Seconds to run the notebook's core cells top to bottom (a fresh kernel, working dir = its folder)."""
    nb = core_path(nbformat.read(path, as_version=4))
    start = time.perf_counter()
    execute(nb, path.parent, fast=fast, timeout=3600)
    return time.perf_counter() - start


def measure(path: Path, execute: bool, fast: bool) -> dict:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if counted(c)]
    core = [c for c in cells if not is_optional(c)]
    optional = [c for c in cells if is_optional(c)]
    row = {
        "notebook": path.name,
        "core_words": sum(map(words, core)), "optional_words": sum(map(words, optional)),
        "core_code": sum(map(code_lines, core)), "optional_code": sum(map(code_lines, optional)),
        "core_exec_s": execute_core(path, fast) if execute else 0.0,
    }
    row["core_min"] = (row["core_words"] / WORDS_PER_MINUTE + row["core_code"] / CODE_LINES_PER_MINUTE
                       + row["core_exec_s"] / 60)
    row["optional_min"] = row["optional_words"] / WORDS_PER_MINUTE + row["optional_code"] / CODE_LINES_PER_MINUTE
    return row


def time_line(row: dict) -> str:
    return (f"**Time.** Core path about {round(row['core_min'])} min · optional sections about "
            f"{round(row['optional_min'])} min more.")


def write_header(path: Path, row: dict) -> None:
    """Replace the ``**Time.** ...`` sentence of the notebook's title cell with the measured one."""
    nb = nbformat.read(path, as_version=4)
    title = next(c for c in nb.cells if counted(c) and c.cell_type == "markdown")
    if not TIME_LINE.search(title.source):
        raise SystemExit(f"{path.name}: its title cell has no '**Time.**' sentence to replace")
    title.source = TIME_LINE.sub(time_line(row), title.source, count=1)
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="count words and code lines only")
    parser.add_argument("--fast", action="store_true", help="execute in fast mode (a smoke test, not a timing)")
    parser.add_argument("--write-headers", action="store_true", help="write each notebook's **Time.** sentence")
    parser.add_argument("notebooks", nargs="*", type=Path, default=CORE_NOTEBOOKS)
    args = parser.parse_args(argv)

    print(f"# {platform.node()} · {os.cpu_count()} CPUs · {platform.processor() or platform.machine()} · "
          f"{time.strftime('%Y-%m-%d')} · execution: {'none' if args.no_execute else 'fast' if args.fast else 'full'} mode")
    header = (f"{'notebook':34} {'core words':>10} {'opt words':>9} {'core code':>9} {'opt code':>8} "
              f"{'core exec s':>11} {'core min':>8} {'opt min':>7}")
    print(header)
    rows = []
    for path in args.notebooks:
        row = measure(path.resolve(), execute=not args.no_execute, fast=args.fast)
        rows.append(row)
        print(f"{row['notebook']:34} {row['core_words']:10d} {row['optional_words']:9d} {row['core_code']:9d} "
              f"{row['optional_code']:8d} {row['core_exec_s']:11.0f} {row['core_min']:8.1f} {row['optional_min']:7.1f}",
              flush=True)
        if args.write_headers:
            write_header(path, row)
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k != "notebook"}
    print(f"{'total':34} {total['core_words']:10d} {total['optional_words']:9d} {total['core_code']:9d} "
          f"{total['optional_code']:8d} {total['core_exec_s']:11.0f} {total['core_min']:8.1f} {total['optional_min']:7.1f}")
    print(f"workshop_core_minutes = {total['core_min']:.0f}")


if __name__ == "__main__":
    main()
