# Two commands on a fresh clone: `make study` (the default study + report) and `make test` (the tests, the docs
# site built in strict mode and the wheel installed into a fresh environment among them).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
# where runs, caches and study reports go (benchmarks/benchmark.py --study points them at fresh folders)
export TRANSFERLAB_RUNS ?= runs
export TRANSFERLAB_CACHE ?= .cache/transferlab
STUDY_OUT ?= experiments

.PHONY: setup test test-slurm test-all docs wheel study study-digits-split study-peft study-fixed-lr benchmark clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[sweep,test,dev]'
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

# The docs site (mkdocs.yml, docs/) into site/; a broken link or a missing page fails (tests/test_docs.py builds it too).
docs: setup
	$(BIN)/mkdocs build --strict

# The wheel into dist/: the package with its configs (setup.py copies conf/, experiments/, sweeps/ into it).
wheel: setup
	$(BIN)/python -m build --wheel --no-isolation

# The default study: the fair protocol (sweep=fair_x_fraction: every strategy tuned on validation at every
# size, the budget by data size) on glyphs -> digits, two jobs at a time with one thread each, W&B offline.
# Re-running resumes it. One thread per job, because a run's numbers depend on its intra-op thread count
# (measured: the same scratch runs at 1 and 2 threads differ by up to 2 test points, as seeds do), so the
# study reproduces on any machine; on this 2-core machine it costs nothing in time (4 scratch jobs, 100 steps:
# 13 examples 38.5 s as 2 jobs x 1 thread against 44.6 s as 1 job x 2 threads; 1,259 examples 58.6 s vs 53.1 s).
# Then the report (selection on validation, tests over seeds, the recommendation) into the study folder.
STUDY_JOBS ?= 2
# STUDY_SWEEP=fair_x_fraction_halving: the same runs selected by successive halving (sweeps/…_halving.yaml)
STUDY_SWEEP ?= fair_x_fraction
define run_study
	OMP_NUM_THREADS=1 $(BIN)/transferlab-train -m experiment=$(1) sweep=$(STUDY_SWEEP) logger=wandb \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(STUDY_JOBS)
	$(BIN)/transferlab-report $(TRANSFERLAB_RUNS)/$(1)/fair_x_fraction --out $(STUDY_OUT)/$(1) \
		--wandb-project transferlab --wandb-group $(1)/fair_x_fraction
endef

study: setup
	$(call run_study,digits_transfer)

# The second study: digits 0-4 (source) -> digits 5-9 (target).
study-digits-split: setup
	$(call run_study,digits_split_transfer)

# The parameter-efficient strategies (BitFit, LoRA) beside the three of `make study`: the same fair sweep with
# the strategy axis widened (their grids are in sweeps/fair_x_fraction.yaml), in the same run folder, so every
# completed scratch, probe and fine-tune run of `make study` is skipped (same identity) and the 5 strategies share
# the draws. The report of all five goes to experiments/digits_transfer_peft (the folder then holds them all: a
# later `make study` reports them too).
study-peft: setup
	OMP_NUM_THREADS=1 $(BIN)/transferlab-train -m experiment=digits_transfer sweep=fair_x_fraction \
		strategy=scratch,linear_probe,finetune,bitfit,lora logger=wandb hydra/launcher=joblib hydra.launcher.n_jobs=$(STUDY_JOBS)
	$(BIN)/transferlab-report $(TRANSFERLAB_RUNS)/digits_transfer/fair_x_fraction --out $(STUDY_OUT)/digits_transfer_peft \
		--wandb-project transferlab --wandb-group digits_transfer/fair_x_fraction

# The fixed-LR protocol of earlier versions (one LR per strategy, fixed epochs): the worked example of the trap.
study-fixed-lr: setup
	$(BIN)/transferlab-train -m experiment=digits_transfer sweep=strategy_x_fraction
	$(BIN)/transferlab-report $(TRANSFERLAB_RUNS)/digits_transfer/strategy_x_fraction --out $(TRANSFERLAB_RUNS)/digits_transfer/strategy_x_fraction/report

benchmark: setup
	$(BIN)/python benchmarks/benchmark.py

clean:
	rm -rf $(TRANSFERLAB_RUNS) $(TRANSFERLAB_CACHE)
