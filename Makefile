# Set-up and everyday commands. Every target creates .venv and installs the package first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench docs docs-serve install lock clean-venv

LOCK := requirements.lock

# The package and its test tools at the exact versions of the lock file (pyproject.toml holds ranges).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Test files run in parallel, one worker more than the cores (tests/conftest.py; module-scoped
# fixtures stay in one worker).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

# The whole chain on the embedded synthetic data: generate, split, train, label the test split,
# then watch a short simulated crystallization with the new model.
demo: $(STAMP)
	$(PY) -m ga.synthetic crystals --out data/archive --per-class 800 --seed 0
	$(PY) split_data.py
	$(PY) main.py --config configs/demo.yaml
	$(PY) inference.py data/split/test --recursive --output data/demo_predictions.csv
	$(PY) -m ga.synthetic process --out data/process --frames 30 --seed 1
	$(PY) -m ga monitor data/process --out-dir data/monitor --alert "pg_fraction > 0.10 over 3 frames"

bench: $(STAMP)
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[test,bench]"
	$(PY) bench/run.py

# The documentation site (mkdocs.yml): built into site/ with every warning an error (the suite runs
# the same build), or served on 127.0.0.1:8000, rebuilt as pages change.
DOCS_ENV := NO_MKDOCS_2_WARNING=1

docs: $(STAMP)
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[docs]"
	$(DOCS_ENV) $(PY) -m mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[docs]"
	$(DOCS_ENV) $(PY) -m mkdocs serve --strict --dev-addr 127.0.0.1:8000

# Rewrite the lock from a fresh environment resolved against pyproject.toml's ranges.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e ".[test]"
	head -3 $(LOCK) > $(LOCK).new && .venv-lock/bin/python -m pip freeze --exclude-editable >> $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock

clean-venv:
	rm -rf $(VENV)
