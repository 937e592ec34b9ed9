"""Shared fixtures: real servers over HTTP (tests/fixtures/server.py) and real models (tests/fixtures/models.py)."""

pytest_plugins = [
    "tests.fixtures.server",
    "tests.fixtures.models",
    "tests.fixtures.ollama",
    "tests.fixtures.openai_upstream",
]
