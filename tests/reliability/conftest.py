"""The reliability suite (`make reliability`): load and faults against real servers, never part of `make test`.

Its tests are collected only when the mark expression selects `reliability` (`pytest -m reliability`),
so a plain `pytest` neither runs nor imports them. Each test fills one row of the results table
printed at the end: streams, replies saved byte-exact, usage counted, errors, duration, PASS/FAIL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from tests.fixtures.server import ServerProcess, create_postgres_database, drop_postgres_database
from tests.reliability.paced_ollama import PacedOllama

RELIABILITY_ENV = {
    "STREAM_STALE_S": "2",  # sessions of a killed process are recovered within seconds
    "STREAM_FLUSH_INTERVAL_S": "0.1",
    "HF_AUTO_EXPORT_DEFAULT": "0",
    "HF_NUM_THREADS": "1",
}


def _selected(config: pytest.Config) -> bool:
    expression = config.getoption("markexpr") or ""
    return bool(expression) and Expression.compile(expression).evaluate(lambda name, **_: name == "reliability")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not _selected(config):
        return True
    return None


# -- the results table ----------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    database: str
    streams: int = 0
    saved_exact: int | None = None  # replies stored byte-exact equal to what the client received
    usage_counted: int | None = None  # generations counted in /api/v1/usage (day and hour agreeing)
    errors: int = 0  # clients that saw an error event or a broken connection
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0
    passed: bool = True


_ROWS: dict[str, Row] = {}


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[Row]:
    """This test's row in the results table (scenario from the test name, database from its parameter)."""
    callspec = getattr(request.node, "callspec", None)
    database = str(callspec.params.get("kind", "-")) if callspec else "-"
    scenario = request.node.originalname.removeprefix("test_").replace("_", " ")
    entry = _ROWS[request.node.nodeid] = Row(scenario, database)
    yield entry
    entry.duration_s = time.monotonic() - entry.started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and item.nodeid in _ROWS:
        _ROWS[item.nodeid].passed = False
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability: what the service held")
    header = ("scenario", "database", "streams", "saved byte-exact", "usage counted", "errors", "duration", "result")
    lines = [
        (
            r.scenario,
            r.database,
            str(r.streams),
            "-" if r.saved_exact is None else f"{r.saved_exact}/{r.streams}",
            "-" if r.usage_counted is None else f"{r.usage_counted}/{r.streams}",
            str(r.errors),
            f"{r.duration_s:.1f}s",
            "PASS" if r.passed else "FAIL",
        )
        for r in _ROWS.values()
    ]
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]
    for line in (header, tuple("-" * w for w in widths), *lines):
        write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    for r in _ROWS.values():
        for note in r.notes:
            write(f"{r.scenario} ({r.database}): {note}")


# -- servers ----------------------------------------------------------------------------------------


@pytest.fixture
def paced_ollama() -> Iterator[PacedOllama]:
    """A fresh fake Ollama with the `paced:latest` model, for one test."""
    server = PacedOllama().start()
    yield server
    server.stop()


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of `kind` for one test: a SQLite file or a fresh PostgreSQL database (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'reliability.sqlite3'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@contextmanager
def serving(database_url: str, tmp_path: Path, ollama: PacedOllama, **env: str) -> Iterator[ServerProcess]:
    """The service on `database_url` with `ollama` as its Ollama; stopped (or already killed) afterwards."""
    server = ServerProcess(
        tmp_path / "server",
        database_url,
        {**RELIABILITY_ENV, "OLLAMA_HOST": ollama.url, "HF_MODELS_DIR": str(tmp_path / "no-models"), **env},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
