# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Each creates .venv with the interpreter below and installs qhw from PyPI packages only.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= demo_out

.PHONY: demo test install clean

$(BIN)/.qhw-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.qhw-installed

demo: install
	$(BIN)/qhw demo -o $(OUT)

test: install
	$(BIN)/ruff check --quiet qhw tests bench
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache sim_build
