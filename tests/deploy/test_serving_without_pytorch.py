"""Serving never imports PyTorch, transformers or Optimum, even where they are installed.

The serving image leaves them out (tests/deploy/test_container_image.py installs it for real, slowly);
this runs a server whose imports of them are recorded and refused, through a whole chat turn on an
exported model.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import GREEDY

BLOCKED = ("torch", "transformers", "optimum", "onnx", "gguf")
BLOCKER = '''"""A stand-in that records that it was imported, then refuses, as if the package were not installed."""
import os
with open(os.environ["BETH_TEST_IMPORT_LOG"], "a") as log:
    log.write(__name__ + "\\n")
raise ImportError(f"{__name__} is not installed in the serving image")
'''


def test_a_chat_turn_imports_no_export_only_package(tmp_path: Path, tiny_export: Path) -> None:
    blockers = tmp_path / "blockers"
    for name in BLOCKED:
        (blockers / name).mkdir(parents=True)
        (blockers / name / "__init__.py").write_text(BLOCKER)
    imports = tmp_path / "imports.log"
    imports.touch()
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_export, target_is_directory=True)
    repo = Path(__file__).resolve().parents[2]
    server = ServerProcess(
        tmp_path / "server",
        f"sqlite:///{tmp_path / 'beth.sqlite3'}",
        {
            "PYTHONPATH": f"{blockers}:{repo}",  # the stand-ins come first, as a missing package would
            "BETH_TEST_IMPORT_LOG": str(imports),
            "HF_MODELS_DIR": str(models),
            "HF_AUTO_EXPORT_DEFAULT": "true",  # the start-up export check runs too (and finds nothing to do)
            "HF_DEFAULT_MODEL": "tiny",
            "OLLAMA_ENABLED": "false",
            "CHAT_MAX_TOKENS": "4",
            "SYSTEM_PROMPT": "Be brief.",
        },
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            created = client.post(
                "/api/v1/conversations", json={"id": "no-torch", "tabName": "No torch", "llmModel": "hf/tiny"}
            )
            assert created.status_code == 201, created.text
            reply = client.post(
                "/api/v1/conversations/no-torch/messages",
                json={"text": "Hello there", "reply": True, "options": GREEDY},
            )
            assert reply.status_code == 201, reply.text
            assert reply.json()["reply"]["text"]
            assert client.get("/metrics").status_code == 200
    finally:
        server.stop()
    assert imports.read_text() == "", server.logs()
