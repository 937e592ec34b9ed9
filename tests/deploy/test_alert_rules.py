"""docs/deploy/alerts.yml: valid Prometheus rules (promtool), naming only metrics a live server exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.dockerfile import REPO
from tests.fixtures.server import ServerProcess

RULES = REPO / "docs" / "deploy" / "alerts.yml"
SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def named_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bbeth_[a-z0-9_]+\b", expr))


def family(name: str) -> str:
    for suffix in SAMPLE_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: the prometheus package)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_fire_as_their_unit_tests_expect() -> None:
    """docs/deploy/alerts.test.yml: server-side failures page and client mistakes do not, an open circuit pages,
    memory pressure and a slow first token warn."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: the prometheus package)")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_cover_what_an_operator_must_hear_about() -> None:
    exprs = " ".join(str(rule["expr"]) for rule in rules())
    for metric in (
        "beth_memory_pressure_unloads_total",  # memory pressure
        "beth_provider_circuit_open",  # circuit open
        "beth_generation_errors_total",  # error rate
        "beth_http_requests_total",
        "beth_time_to_first_token_seconds_bucket",  # time to first token
    ):
        assert metric in exprs
    for rule in rules():
        assert rule["alert"]
        assert rule["annotations"]["summary"]  # type: ignore[index]
        assert rule["labels"]["severity"] in ("page", "warn")  # type: ignore[index]


def test_every_metric_in_the_rules_is_exposed(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'beth.sqlite3'}", {"OLLAMA_ENABLED": "false"})
    server.start()
    try:
        httpx.get(f"{server.url}/health", timeout=10)
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    # a labelled metric without samples still has its TYPE line; samples carry the _total/_bucket names
    exposed = {family(name) for name in re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)}
    exposed |= {family(name) for name in re.findall(r"^(beth_[a-z0-9_]+)", text, flags=re.MULTILINE)}
    for rule in rules():
        for metric in named_metrics(str(rule["expr"])):
            assert family(metric) in exposed, f"{rule['alert']}: {metric} is not in /metrics"
