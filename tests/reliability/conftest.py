"""The reliability suite (`make reliability`): load and faults against real servers, never part of `make test`.

Its tests are collected only when the mark expression selects `reliability` (`pytest -m reliability`),
so a plain `pytest` neither runs nor imports them. Each test fills one row of the results table
printed at the end: streams, replies saved byte-exact, usage counted, errors, duration, PASS/FAIL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from tests.reliability.paced_ollama import PacedOllama
from tests.reliability.report import ROWS, Row


def _selected(config: pytest.Config) -> bool:
    expression = config.getoption("markexpr") or ""
    return bool(expression) and Expression.compile(expression).evaluate(lambda name, **_: name == "reliability")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not _selected(config):
        return True
    return None


# -- the results table ----------------------------------------------------------------------------


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[Row]:
    """This test's row in the results table (scenario from the test name, database from its parameter)."""
    callspec = getattr(request.node, "callspec", None)
    database = str(callspec.params.get("kind", "-")) if callspec else "-"
    scenario = request.node.originalname.removeprefix("test_").replace("_", " ")
    entry = ROWS[request.node.nodeid] = Row(scenario, database)
    yield entry
    entry.duration_s = time.monotonic() - entry.started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    entry = ROWS.get(item.nodeid)
    if entry is not None and entry.result != "FAIL" and (report.failed or report.skipped):
        entry.result = "FAIL" if report.failed else "SKIP"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
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
            r.result,
        )
        for r in ROWS.values()
    ]
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]
    for line in (header, tuple("-" * w for w in widths), *lines):
        write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    for r in ROWS.values():
        for note in r.notes:
            write(f"{r.scenario} ({r.database}): {note}")


# -- the provider ---------------------------------------------------------------------------------


@pytest.fixture
def paced_ollama() -> Iterator[PacedOllama]:
    """A fresh fake Ollama with the `paced:latest` model, for one test."""
    server = PacedOllama().start()
    yield server
    server.stop()
