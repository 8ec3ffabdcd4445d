# The two set-up commands of the README, and the chores behind them.
#   make lab    install roiviz and the notebook tools into .venv, open the notebooks in JupyterLab
#   make test   install roiviz and every test tool (Debian's chromium too), run every test
# torch is pinned here (the CPU wheel); the package itself asks only for torch>=2.2, so a GPU
# user can run e.g. `make test TORCH=torch` inside an environment that already has CUDA torch.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
ROOT   := $(filter 0,$(shell id -u))

.PHONY: lab test install-notebooks install-test chromium notebooks screenshots bench gpu-check lint fixtures clean

lab: install-notebooks
	$(BIN)/jupyter lab notebooks/ $(if $(ROOT),--allow-root)

test: install-test chromium
	$(BIN)/python -m pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Each install ends by compiling the CPU kernels (numba, cached on disk next to them), so that
# the first call in a notebook loads them instead of waiting seconds for the compiler.
install-notebooks: $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[notebooks]"
	$(BIN)/roiviz compile

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[test]"
	$(BIN)/roiviz compile

# The real-browser test drives Debian's chromium (never `playwright install`: no downloads).
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ -n "$(ROOT)" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "chromium is not installed and apt needs root: the browser test will be skipped (install Debian's 'chromium')"; fi

# Re-execute every notebook from a clean kernel and store its outputs (what nbval compares).
notebooks: install-test
	$(BIN)/python scripts/execute_notebooks.py

# Refresh the README's screenshots (docs/screenshots/explorer-*.png): the browser test writes
# its screenshots here only when asked
# (by default they go to a temporary folder, so that `make test` leaves the checkout unchanged).
screenshots: install-test chromium
	ROIVIZ_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -m browser tests/test_browser.py

bench: install-test
	$(BIN)/roiviz bench

# On a machine with an NVIDIA GPU: the CUDA tests, exactness, determinism and `roiviz bench
# --device cuda` against torchvision, in one JSON + figure (see scripts/gpu_check.sh).
gpu-check:
	bash scripts/gpu_check.sh

lint: install-test
	$(BIN)/ruff check .

# Golden torchvision fixtures: needs an environment with torch==2.14.1 torchvision==0.29.1.
fixtures:
	@echo "run: <venv with torchvision>/bin/python scripts/make_fixtures.py"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
