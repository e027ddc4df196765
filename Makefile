# Two commands on a fresh clone: `make study` (the default study + report) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: setup test test-slurm test-all study benchmark clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[sweep,test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -q

# The SLURM launcher against a one-machine SLURM: the tests start it (scripts/slurm-local start, as root: it
# installs Debian's slurm-wlm and munge) and stop it again; without root or apt they skip and say why.
test-slurm: setup
	$(BIN)/python -m pytest -q -m slurm --durations=5

test-all: setup
	$(BIN)/python -m pytest -q -m ''

STUDY_RUNS := runs/digits_transfer/strategy_x_fraction

# Trains the source model once (cached), runs the 45-run sweep into $(STUDY_RUNS) (re-running resumes it),
# then regenerates the study's report in experiments/digits_transfer/ and logs it to W&B (offline by default).
study: setup
	$(BIN)/transferlab-train -m experiment=digits_transfer sweep=strategy_x_fraction
	$(BIN)/transferlab-report $(STUDY_RUNS) --out experiments/digits_transfer \
		--wandb-project transferlab --wandb-group digits_transfer/strategy_x_fraction

benchmark: setup
	$(BIN)/python benchmarks/benchmark.py

clean:
	rm -rf runs .cache/transferlab
