# Set-up and everyday commands. Every target creates .venv and installs the package first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench install clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Test files run in parallel, one worker per core (module-scoped fixtures stay in one worker).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

# The whole chain on the embedded synthetic data: generate, split, train, label the test split.
demo: $(STAMP)
	$(PY) -m ga.synthetic crystals --out data/archive --per-class 800 --seed 0
	$(PY) split_data.py
	$(PY) main.py --config configs/demo.yaml
	$(PY) inference.py data/split/test --recursive --output data/demo_predictions.csv

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) bench/run.py

clean-venv:
	rm -rf $(VENV)
