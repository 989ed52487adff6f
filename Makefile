# progvc_lab: one entry point for the virtual environment, the demo, the tests and the notebooks.
#
#   make demo          encode/decode a shipped clip with the shipped model
#   make test          the default suite (fast; no ../shared, no browser needed)
#   make test-slow     notebooks and training end-to-end
#   make test-browser  JupyterLab / Voila in headless chromium (needs `apt-get install chromium`)
#   make lab           JupyterLab on notebooks/
#   make explore       the explorer notebook as a Voila app (no code shown)
#
# Every target first makes sure .venv exists and is up to date with pyproject.toml.
# Extra pytest arguments: make test PYTEST_ARGS="-n 2 -x"

VENV        ?= .venv
PYTHON      := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
STAMP       := $(VENV)/.installed
# Installed FIRST and pinned exactly: a looser pin lets pip pull a multi-GB CUDA build.
# pyproject.toml only asks for torch>=2.2, so users elsewhere keep the build that fits their machine.
TORCH_PIN   := torch==2.13.0
EXTRAS      := test,browser
PYTEST_ARGS ?=

# The venv's own tools first (ninja, jupyter, voila), whether or not the venv is activated.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# torchac compiles its C++ extension at first import: once, into the project cache.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

# Tests never touch the network and never open a window.
TEST_ENV := HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
PYTEST   := $(TEST_ENV) $(PYTHON) -m pytest $(PYTEST_ARGS)
# For suites that may still be empty: pytest's exit code 5 ("no tests collected") counts as success.
ALLOW_EMPTY = rc=0; $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "(no tests collected: nothing to run yet)"; exit 0; fi; exit $$rc

.PHONY: setup demo test test-slow test-browser test-all lab explore clean

# setup: create .venv (only if missing) and install the package in editable mode.
setup: $(STAMP)

# The stamp is older than pyproject.toml or this Makefile (or missing) -> install again; an existing venv is reused.
$(STAMP): pyproject.toml Makefile
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

# demo: the shipped model on a shipped clip, no network, no GPU.
demo: $(STAMP)
	$(VENV)/bin/progvc-lab demo

# test: the default suite, what every commit must pass.
test: $(STAMP)
	$(PYTEST) -q -m "not slow and not browser"

# test-slow: notebooks executed top to bottom and training runs end-to-end.
test-slow: $(STAMP)
	@$(call ALLOW_EMPTY,$(PYTEST) -q -m slow)

# test-browser: JupyterLab and Voila rendered and driven in headless chromium.
test-browser: $(STAMP)
	@$(call ALLOW_EMPTY,$(PYTEST) -q -m browser)

# test-all: every suite in one run.
test-all: $(STAMP)
	$(PYTEST) -q

# lab: JupyterLab on the notebooks (--allow-root only when run as root, e.g. in a container).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# explore: the explorer notebook served as an app, widgets only (code cells hidden).
explore: $(STAMP)
	$(VENV)/bin/voila notebooks/explorer.ipynb --strip_sources=True

# clean: remove caches and build outputs (keeps .venv and training logs; `rm -rf .venv` to rebuild it from scratch).
clean:
	rm -rf .cache build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
