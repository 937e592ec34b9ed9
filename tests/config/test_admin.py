"""With BETH_ADMIN_TOKEN set, the configuration endpoints want it as a bearer token; it is never shown."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.server import ServerProcess

TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def guarded(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    process = ServerProcess(
        tmp_path_factory.mktemp("admin"),
        database_url,
        {"BETH_ADMIN_TOKEN": TOKEN, "OLLAMA_ENABLED": "0", "HF_AUTO_EXPORT_DEFAULT": "0"},
    )
    process.start()
    with httpx.Client(base_url=process.url, timeout=30) as client:
        yield client
    process.stop()
    assert TOKEN not in process.logs()


def test_missing_wrong_and_right_tokens(guarded: httpx.Client) -> None:
    missing = guarded.get("/api/v1/config")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = guarded.get("/api/v1/config", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "UNAUTHORIZED"
    for path in ("/api/v1/config/revisions", "/api/v1/config/backup"):
        assert guarded.get(path).status_code == 401
    assert guarded.patch("/api/v1/config", json={"system_prompt": "x"}).status_code == 401

    right = guarded.get("/api/v1/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    token = right.json()["settings"]["beth_admin_token"]
    assert (token["value"], token["source"]) == ("***", "env")
    assert TOKEN not in right.text
