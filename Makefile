# Two commands on a fresh clone: `make run` trains the offline default, `make test` runs the tests.
# Both depend on `install`, which builds .venv/ from requirements.txt (pinned) and installs this
# package in editable mode; it re-runs only when requirements.txt, setup.cfg or setup.py change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS_DIR ?= $(or $(MLPROJ_RUNS_DIR),runs)

.PHONY: install run test test-browser test-cluster board lint bench bench-gpu tensorboard omniboard clean help sweep sweep-lr sweep-models tune

help:
	@echo "make run          train LeNet-5 on scikit-learn's digits (offline) and record the run"
	@echo "make test         run the test suite (all but the browser tests)"
	@echo "make test-browser the board's tests in headless Chromium (installs chromium and chromium-driver when missing)"
	@echo "make test-cluster install (apt) and start SLURM and PostgreSQL on this host, run the cluster tests, stop them"
	@echo "make board        serve the runs in $(RUNS_DIR) on http://127.0.0.1:8765 (mlproj board)"
	@echo "make lint         ruff check"
	@echo "make bench        tracked training vs a bare PyTorch loop, data paths, start-up (a few minutes)"
	@echo "make bench-gpu    the same job on a GPU: bare loop vs tracked, warm-up apart, samples/s, peak memory"
	@echo "make tensorboard  serve TensorBoard over $(RUNS_DIR)/tensorboard"
	@echo "make omniboard    install Omniboard $(OMNIBOARD_VERSION) into ./node_modules and serve MONGODB_URI's runs"
	@echo "make sweep SWEEP=\"lr=[0.01,0.001] batch_size=[32,64]\" JOBS=2   grid on digits, skipping trials already done"
	@echo "make sweep-lr     example: random search of lr and weight_decay (8 trials)"
	@echo "make sweep-models example: grid of model x lr, 2 seeds each"
	@echo "make tune TRIALS=8 JOBS=2   example: Optuna study of lr and batch_size on digits, with pruning; rerun to continue"

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: install
	$(BIN)/python main.py with dataset=digits
	@id=$$(ls $(RUNS_DIR) | grep -E '^[0-9]+$$' | sort -n | tail -1); \
	echo; \
	echo "Recorded in $(RUNS_DIR)/$$id/: config.json, metrics.json, cout.txt, best.pt, last.pt."; \
	echo "Look at it:"; \
	echo "  make tensorboard                                   # curves in TensorBoard"; \
	echo "  make board                                         # the runs in a browser (mlproj board)"; \
	echo "  .venv/bin/python main.py test with checkpoint=$(RUNS_DIR)/$$id/best.pt   # test-set metrics"

test: install
	$(BIN)/python -m pytest -q -m "not browser"

# The board's browser tests drive Debian's chromium through chromium-driver, installed here when
# missing (as root, else with sudo); without them the tests skip and say why.
test-browser: install
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi
	$(BIN)/python -m pytest -q -m browser

board: install
	$(BIN)/mlproj board $(RUNS_DIR)

# The tests marked `cluster` (README, "Development"): a one-node SLURM cluster and a PostgreSQL
# server on 127.0.0.1, installed with apt-get when missing (root), stopped again on exit.
test-cluster: install
	bash test/cluster/run.sh

lint: install
	$(BIN)/ruff check mlproj test main.py

bench: install
	$(BIN)/python -m mlproj.bench

bench-gpu: install
	$(BIN)/python -m mlproj.bench --device cuda --train 50000 --test 10000 --epochs 5 --batch-size 512

tensorboard: install
	$(BIN)/tensorboard --logdir $(RUNS_DIR)/tensorboard

# Omniboard reads MongoDB only (file runs get there with `mlproj sync`). Installed locally, pinned;
# the URI is passed through the environment so make never echoes its credentials. The URI is
# checked (set, well-formed, the server answers) before npm installs anything: Omniboard itself
# starts on a bad URI and dies later with a Node stack trace.
OMNIBOARD_VERSION := 2.16.1
OMNIBOARD := node_modules/.bin/omniboard

$(OMNIBOARD):
	npm install --no-save --no-package-lock --no-audit --no-fund omniboard@$(OMNIBOARD_VERSION)

omniboard:
	@test -n "$$MONGODB_URI" || { echo "make omniboard: set MONGODB_URI, e.g. MONGODB_URI=mongodb://localhost:27017/sacred make omniboard"; exit 1; }
	@$(MAKE) --no-print-directory install
	@$(BIN)/mlproj check-mongo
	@$(MAKE) --no-print-directory $(OMNIBOARD)
	@echo "Omniboard on http://localhost:9000 (Ctrl-C stops it)"
	@$(OMNIBOARD) --mu "$$MONGODB_URI"

# Sweeps (README, "Sweeps"): one main.py process per trial, JOBS at a time; re-running the same
# target runs only the trials without a COMPLETED run. SWEEP words are quoted one by one for the shell.
JOBS ?= 2
SWEEP ?= lr=[0.01,0.001] batch_size=[32,64]
SWEEP_BASE ?= digits_mlp n_epochs=5
SWEEP_ARGS ?=
SWEEP_CMD := $(BIN)/python -m mlproj.cli sweep main.py

sweep: install
	$(SWEEP_CMD) with $(SWEEP_BASE) $(foreach w,$(SWEEP),'$(w)') --jobs $(JOBS) $(SWEEP_ARGS)

sweep-lr: install
	$(SWEEP_CMD) with digits_mlp n_epochs=5 'lr=loguniform(1e-4,1e-1)' 'weight_decay=choice(0.0,1e-4)' \
		--random 8 --jobs $(JOBS) --name sweep-lr $(SWEEP_ARGS)

sweep-models: install
	$(SWEEP_CMD) with dataset=digits n_epochs=5 'model=[mlp,lenet]' 'lr=[0.01,0.001]' \
		--seeds 2 --jobs $(JOBS) --name sweep-models $(SWEEP_ARGS)

# Tuning (README, "Tuning"): an Optuna study on digits, stored in $(RUNS_DIR)/_tune/tune-digits.db;
# re-running continues it until it holds TRIALS finished trials.
TRIALS ?= 8
TUNE_ARGS ?=

tune: install
	$(BIN)/python -m mlproj.cli tune main.py with digits_mlp n_epochs=3 'lr=loguniform(1e-4,1e-1)' \
		'batch_size=choice(32,64,128)' --trials $(TRIALS) --jobs $(JOBS) --prune --name tune-digits $(TUNE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
