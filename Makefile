# Two commands do everything:  make lab  (follow the course)  ·  make test  (run every test)
# Both create .venv if needed and install the package into it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= course,doom,dev
TORCH_VERSION ?= 2.13.0
# Where a machine without an NVIDIA GPU gets PyTorch's CPU build (a few hundred MB, not several GB).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
START_NOTEBOOK ?= notebooks/00_welcome_and_setup.ipynb
# make lab PORT=8890 picks the port (JupyterLab moves to the next free one if it is taken);
# LAB_ARGS passes anything else to JupyterLab, e.g. LAB_ARGS=--ip=0.0.0.0 inside a container.
PORT ?= 8888
LAB_ARGS ?=
PYTEST_ARGS ?=
# make test runs the suite in this many processes (pytest-xdist; each test file stays in one process,
# so a notebook's cells run in order). 1 runs everything in one process.
TEST_WORKERS ?= 2

.PHONY: lab test exercises bench install torch clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# PyTorch first, so that the package's unpinned `torch` requirement is already met:
#   1. already importable            -> keep it;
#   2. a local wheel (pip's find-links) -> use it;
#   3. Linux without nvidia-smi      -> the CPU build from PyTorch's CPU index;
#   4. otherwise (a GPU, macOS, Windows) -> pip's default build, which is right there.
torch: $(PY)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') is installed"; \
	elif $(PY) -m pip install --quiet --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null; then \
		echo "installed torch $(TORCH_VERSION) from a local wheel"; \
	elif [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); \
	else \
		$(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	fi

$(VENV)/.installed-$(EXTRAS): pyproject.toml | torch
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# JupyterLab serves the project root (notebooks/, exercises/ and solutions/ all in its file browser)
# and opens notebook 00. It is told --allow-root only when run as root (Docker, cloud VMs, WSL), and
# --no-browser only on a Linux machine with no display, where it prints the URL with its token.
lab: install
	@args=(--port=$(PORT) "--ServerApp.root_dir=$(CURDIR)" "--LabApp.default_url=/lab/tree/$(START_NOTEBOOK)"); \
	if [ "$$(id -u)" = 0 ]; then args+=(--allow-root); fi; \
	if [ "$$(uname -s)" = Linux ] && [ -z "$${DISPLAY}$${WAYLAND_DISPLAY}" ]; then \
		args+=(--no-browser); \
		echo "No display here: open the http://... URL that JupyterLab prints below in a browser."; \
	fi; \
	exec "$(VENV)/bin/jupyter" lab "$${args[@]}" $(LAB_ARGS)

# Unit tests, CLI tests, and every notebook under nbval, all in fast mode, figures rendered and checked; a failing exercise check
# in a solution notebook raises (strict checks), so nbval sees it.
test: install
	PPO_COURSE_FAST=1 PPO_COURSE_STRICT_CHECKS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Regenerate exercises/ from the marked solution regions in solutions/.
exercises: install
	$(VENV)/bin/ppo-course exercises build

bench:
	$(MAKE) install EXTRAS=course,doom,dev,bench
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/lunar_time_to_solve.py
	$(PY) benchmarks/doom_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache runs
