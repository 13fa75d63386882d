# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Each creates .venv with the interpreter below and installs qhw from PyPI packages only.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= demo_out
# test workers (pytest-xdist): one per core; a test file stays on one worker (its module fixtures run once)
JOBS   ?= auto

.PHONY: demo test install clean

$(BIN)/.qhw-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.qhw-installed

demo: install
	$(BIN)/qhw demo -o $(OUT)

test: install
	$(BIN)/ruff check --quiet qhw tests sim bench
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache sim_build
