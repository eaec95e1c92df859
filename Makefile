# Two commands on a fresh clone: `make run` trains the offline default, `make test` runs the tests.
# Both depend on `install`, which builds .venv/ from requirements.txt (pinned) and installs this
# package in editable mode; it re-runs only when requirements.txt or setup.cfg change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS_DIR ?= $(or $(MLPROJ_RUNS_DIR),runs)

.PHONY: install run test lint bench tensorboard clean help

help:
	@echo "make run          train LeNet-5 on scikit-learn's digits (offline) and record the run"
	@echo "make test         run the test suite"
	@echo "make lint         ruff check"
	@echo "make bench        tracked training vs a bare PyTorch loop, data paths, start-up (a few minutes)"
	@echo "make tensorboard  serve TensorBoard over $(RUNS_DIR)/tensorboard"

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: install
	$(BIN)/python main.py with dataset=digits
	@echo
	@echo "The run is recorded in $(RUNS_DIR)/$$(ls $(RUNS_DIR) | grep -E '^[0-9]+$$' | sort -n | tail -1)/ (config.json, metrics.json, cout.txt, best.pt, last.pt)."
	@echo "Look at it:  .venv/bin/mlproj runs    |    make tensorboard    |    .venv/bin/python main.py test with checkpoint=$(RUNS_DIR)/<id>/best.pt"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check mlproj test main.py

bench: install
	$(BIN)/python -m mlproj.bench

tensorboard: install
	$(BIN)/tensorboard --logdir $(RUNS_DIR)/tensorboard

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
