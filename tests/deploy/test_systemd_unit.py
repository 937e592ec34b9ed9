"""docs/deploy/beth-chat.service: verified by `systemd-analyze verify`, and its stop settings fit the server's."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from app.server import GRACEFUL_SHUTDOWN_S
from tests.deploy.dockerfile import REPO

UNIT = REPO / "docs" / "deploy" / "beth-chat.service"
EXECUTABLE = "/opt/beth-chat/bin/beth-chat"


def service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_serves_and_gives_shutdown_time_to_finish() -> None:
    service = service_section()
    assert service["ExecStart"] == f"{EXECUTABLE} serve"
    assert service["KillSignal"] == "SIGTERM"  # the signal on which open replies are stopped and saved
    assert int(service["TimeoutStopSec"]) > GRACEFUL_SHUTDOWN_S
    assert service["Environment"]  # configparser keeps the last one; every one is checked by systemd below
    assert "HF_AUTO_EXPORT_DEFAULT=false" in UNIT.read_text()
    assert service["User"] != "root"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd checks that ExecStart's program exists: point it at a stand-in of the installed command.
    stand_in = tmp_path / "beth-chat"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "beth-chat.service"
    unit.write_text(UNIT.read_text().replace(EXECUTABLE, str(stand_in)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    # unknown keys and unparsable values are only warnings (exit status 0): any output about the unit fails too
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "beth-chat.service" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []
