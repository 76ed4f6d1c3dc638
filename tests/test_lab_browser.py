"""`make lab` in a real browser: JupyterLab serves the project root, notebooks run, and the explorers redraw.

Starts the server exactly as a learner does (`make lab PORT=...`, with no display, so it prints its
URL and token), then drives headless Chromium with Playwright: opens notebook 00 and runs its first
cells, checks the file browser reaches notebooks/, exercises/ and solutions/, runs notebook 06 up to
the clipping explorer and drags its ε slider, and does the same for notebook 05's γ/λ explorer; the
figure must change (different image bytes). Screenshots go to ``runs/browser-test/``.

Needs a Chromium (Debian's ``chromium`` package, or ``$PPO_COURSE_CHROMIUM``) and the ``playwright``
Python package (the ``dev`` extra); without them the test is skipped with the reason. `.ci/run`
installs Chromium first, so CI always runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "runs" / "browser-test"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 120
CELL_TIMEOUT_MS = 240_000


def _chromium() -> str | None:
    candidates = [os.environ.get("PPO_COURSE_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = _chromium()
try:
    import playwright.sync_api  # noqa: F401
    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium, or set "
                                               "PPO_COURSE_CHROMIUM): the real-browser test of `make lab` did not run"),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="playwright is not installed (pip install -e '.[dev]'): "
                                                   "the real-browser test of `make lab` did not run"),
    pytest.mark.skipif(shutil.which("make") is None or not (Path(sys.prefix) / "bin" / "jupyter").exists(),
                       reason="needs make and JupyterLab in this environment"),
]


class Lab:
    """`make lab` running in the background; `url` is the address it printed, token included."""

    def __init__(self, tmp: Path):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
        settings = tmp / "settings"
        # No autosave: the notebooks this test runs must stay as committed (clean, without outputs).
        # No news pop-up over the page.
        for plugin, values in {"docmanager-extension/plugin": '{"autosave": false}',
                               "apputils-extension/notification": '{"fetchNews": "false"}'}.items():
            path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(values)
        env.update(PPO_COURSE_FAST="1", JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_CONFIG_DIR=str(tmp / "config"))
        # -o install: pytest already runs inside the installed environment, so make need not check it.
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", "install", "lab", f"PORT={self.port}", f"VENV={sys.prefix}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.log: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._found.wait(SERVER_START_S):
            self.stop()
            raise AssertionError("make lab printed no URL in time:\n" + "".join(self.log[-40:]))

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line)
            match = re.search(r"(http://(?:localhost|127\.0\.0\.1):\d+/\S*token=\w+)", line)
            if match and self.url is None:
                self.url = match.group(1)
                self._found.set()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    committed = {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()
    changed = [p.name for p, text in committed.items() if p.read_bytes() != text]
    assert not changed, f"the browser session wrote to {changed}"


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


# --------------------------------------------------------------------------------------
# Driving JupyterLab like a learner
# --------------------------------------------------------------------------------------
def _open(page, lab, notebook: str):
    base = lab.url.split("/lab")[0]
    token = lab.url.split("token=")[1]
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    _wait_for_kernel(page, notebook)


def _notebook(page):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")


def _wait_for_kernel(page, notebook: str):
    """Wait until every cell of ``notebook`` is on the page and the status bar says its kernel is idle."""
    import nbformat

    count = len(nbformat.read(ROOT / notebook, as_version=4).cells)
    page.wait_for_function(
        """(count) => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').length === count
                      && /Python 3.*\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget').textContent)""",
        arg=count, timeout=SERVER_START_S * 1000)


def _wait_until_idle(page, settle_s: float = 1.0):
    """Wait until the kernel has been idle for ``settle_s`` (widget messages may still be on their way)."""
    idle = "() => /\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget').textContent)"
    for _ in range(2):
        page.wait_for_function(idle, timeout=CELL_TIMEOUT_MS)
        time.sleep(settle_s)
    page.wait_for_function(idle, timeout=CELL_TIMEOUT_MS)


def _run_through(page, last: int):
    """Select the first cell, then Shift+Enter through cells 0..last; wait until every one has run."""
    cells = _notebook(page).locator(".jp-Cell")
    cells.nth(0).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")  # command mode: Shift+Enter runs the selected cell and moves on
    for _ in range(last + 1):
        page.keyboard.press("Shift+Enter")
        time.sleep(0.05)
    page.wait_for_function(
        """(last) => { const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell');
                       for (let i = 0; i <= last; i++) {
                         const p = cells[i].querySelector('.jp-InputPrompt');
                         if (cells[i].classList.contains('jp-CodeCell') && !/\\[\\d+\\]/.test(p.textContent)) return false;
                       }
                       return true; }""", arg=last, timeout=CELL_TIMEOUT_MS)
    errors = _notebook(page).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, "a cell raised:\n" + "\n".join(errors.all_inner_texts())


def _figure(cell) -> str:
    """The base64 PNG the explorer's output shows now."""
    image = cell.locator(".jp-OutputArea-output img").first
    image.wait_for()
    return image.get_attribute("src")


def _drag_slider(page, cell, description: str, fraction: float) -> str:
    """Drag the slider labelled ``description`` by ``fraction`` of its track width (negative: left)."""
    slider = cell.locator(".widget-slider", has=page.locator(f"label:text-is('{description}')"))
    handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-base")
    box, track_box = handle.bounding_box(), track.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + fraction * track_box["width"], y, steps=8)
    page.mouse.up()


def _explorer_redraws(page, cell_index: int, slider: str, fraction: float, shot: str):
    cell = _notebook(page).locator(".jp-Cell").nth(cell_index)
    cell.scroll_into_view_if_needed()
    before = _figure(cell)
    page.screenshot(path=str(ARTIFACTS / f"{shot}_before.png"))
    readout = cell.locator(".widget-slider", has=page.locator(f"label:text-is('{slider}')")).locator(".widget-readout")
    old_value = readout.inner_text()
    _drag_slider(page, cell, slider, fraction)
    page.wait_for_function(
        """([index, before]) => { const cell = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell')[index];
                                  const img = cell.querySelector('.jp-OutputArea-output img');
                                  return img && img.getAttribute('src') !== before; }""",
        arg=[cell_index, before], timeout=60_000)
    _wait_until_idle(page)  # the slider redraws while it moves: wait for the last redraw
    after = _figure(cell)
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{shot}_after.png"))
    assert readout.inner_text() != old_value, f"the {slider} slider did not move"
    assert after != before and after.startswith("data:image/png;base64,")
    return old_value, readout.inner_text()


# --------------------------------------------------------------------------------------
# The tests (in this order: one server, one browser)
# --------------------------------------------------------------------------------------
def test_make_lab_serves_the_project_root(lab):
    log = "".join(lab.log)
    assert f"Serving notebooks from local directory: {ROOT}" in log, log
    assert "/lab/tree/notebooks/00_welcome_and_setup.ipynb" in lab.url


def test_notebook_00_runs_and_the_file_browser_reaches_the_whole_course(page, lab):
    _open(page, lab, "notebooks/00_welcome_and_setup.ipynb")
    page.screenshot(path=str(ARTIFACTS / "00_opened.png"))
    frame_cell = next(i for i, c in enumerate(nbformat.read(ROOT / "notebooks" / "00_welcome_and_setup.ipynb",
                                                           as_version=4).cells)
                      if c.cell_type == "code" and "plt.imshow(env.render())" in c.source)
    _run_through(page, frame_cell)  # set-up, doctor, the environment, the loop, a crash's last frame
    first_frame = _notebook(page).locator(".jp-Cell").nth(frame_cell).locator(".jp-OutputArea-output img")
    assert first_frame.count() == 1, "notebook 00's frame figure did not render"
    page.screenshot(path=str(ARTIFACTS / "00_first_cells_run.png"))

    page.locator(".jp-BreadCrumbs-home").first.click()
    listing = page.locator(".jp-DirListing-content .jp-DirListing-itemName")
    for folder in ("notebooks", "exercises", "solutions"):
        listing.filter(has_text=re.compile(f"^{folder}$")).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "00_file_browser_root.png"))


def test_clipping_explorer_redraws_when_eps_moves(page, lab):
    _open(page, lab, "notebooks/06_ppo_objective.ipynb")
    index = _cell_index("notebooks/06_ppo_objective.ipynb", "clipping_explorer()")
    _run_through(page, index)
    old, new = _explorer_redraws(page, index, "ε", 0.5, "06_clipping_explorer")
    assert float(new) > float(old)


def test_gae_explorer_redraws_when_gamma_and_lambda_move(page, lab):
    _open(page, lab, "notebooks/05_advantages_and_gae.ipynb")
    index = _cell_index("notebooks/05_advantages_and_gae.ipynb", "gae_explorer(**column)")
    _run_through(page, index)
    old, new = _explorer_redraws(page, index, "γ", -0.4, "05_gae_explorer_gamma")
    assert float(new) < float(old)
    old, new = _explorer_redraws(page, index, "λ", -0.5, "05_gae_explorer_lambda")
    assert float(new) < float(old)


def _cell_index(notebook: str, text: str) -> int:
    import nbformat

    cells = nbformat.read(ROOT / notebook, as_version=4).cells
    hits = [i for i, c in enumerate(cells) if c.cell_type == "code" and text in c.source]
    assert len(hits) == 1, f"{notebook}: expected one code cell containing {text!r}, found {hits}"
    return hits[0]
