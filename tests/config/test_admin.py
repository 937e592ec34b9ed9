"""The admin endpoints (configuration, model load and unload): a bearer token when BETH_ADMIN_TOKEN is set
(never shown), else loopback clients that name a loopback host; never another web origin; declared body types."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.controllers.admin_guard import check_loopback, refuse_foreign_origin
from app.errors import ServiceError
from tests.config.conftest import TOML_BODY, config_file
from tests.fixtures.ollama import FakeOllama
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


def test_with_the_token_other_host_names_are_allowed_but_not_other_origins(guarded: httpx.Client) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/api/v1/config", headers={**bearer, "Host": "evil.example"}).status_code == 200
    assert guarded.get("/api/v1/config", headers={"Host": "evil.example"}).status_code == 401
    foreign = guarded.get("/api/v1/config", headers={**bearer, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "CROSS_ORIGIN"
    # model load and unload want the token too (no model here: past the guard, the name is not found)
    assert guarded.post("/api/v1/models/hf/nope/load").status_code == 401
    assert guarded.post("/api/v1/models/hf/nope/unload", headers=bearer).json()["error"]["code"] == "MODEL_NOT_FOUND"
    assert guarded.get("/api/v1/model-configs").status_code == 401
    assert guarded.get("/api/v1/model-configs", headers=bearer).status_code == 200


# Without a token (the default): the configuration server of tests/config/conftest.py, on loopback.

EVIL = {"Origin": "http://evil.example"}


def assert_refused(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def snapshot(admin: httpx.Client, server: ServerProcess) -> tuple[dict, list, str, int]:
    """What a refused change must leave as it was: the configuration, its history and the file."""
    path = config_file(server)
    revisions = admin.get("/api/v1/config/revisions").json()["revisions"]
    return admin.get("/api/v1/config").json(), revisions, path.read_text(), path.stat().st_mtime_ns


def test_a_cross_site_restore_is_refused_and_changes_nothing(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama]
) -> None:
    before = snapshot(admin, config_server)
    attack = f'ollama_host = "{ollamas[1].url}"\nsystem_prompt = "You are pwned."\n'
    # what any web page can send without a CORS preflight
    simple = admin.post("/api/v1/config/restore", content=attack, headers={**EVIL, "Content-Type": "text/plain"})
    error = assert_refused(simple, 403, "CROSS_ORIGIN")
    assert error["details"]["origin"] == "http://evil.example"
    # the right content type does not help another origin, nor does any other admin endpoint
    assert_refused(
        admin.post("/api/v1/config/restore", content=attack, headers={**EVIL, **TOML_BODY}), 403, "CROSS_ORIGIN"
    )
    assert_refused(
        admin.post("/api/v1/config/validate", content=attack, headers={**EVIL, **TOML_BODY}), 403, "CROSS_ORIGIN"
    )
    assert_refused(admin.patch("/api/v1/config", json={"systemPrompt": "pwned"}, headers=EVIL), 403, "CROSS_ORIGIN")
    for path in ("/api/v1/config", "/api/v1/config/backup", "/api/v1/config/revisions", "/api/v1/model-configs"):
        assert_refused(admin.get(path, headers=EVIL), 403, "CROSS_ORIGIN")
    assert snapshot(admin, config_server) == before
    assert setting_value(admin, "system_prompt") == "You are the first prompt."


def setting_value(admin: httpx.Client, key: str) -> object:
    return admin.get("/api/v1/config").json()["settings"][key]["value"]


def test_bodies_need_their_declared_content_type(admin: httpx.Client, config_server: ServerProcess) -> None:
    before = snapshot(admin, config_server)
    toml = 'system_prompt = "Changed by a restore."\n'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/toml"):
        for path in ("/api/v1/config/restore", "/api/v1/config/validate"):
            refused = admin.post(path, content=toml, headers={"Content-Type": kind})
            error = assert_refused(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
            assert "application/toml" in error["message"]
    no_type = admin.post("/api/v1/config/restore", content=toml)  # httpx names no type for raw content
    assert "content-type" not in no_type.request.headers
    assert_refused(no_type, 415, "UNSUPPORTED_MEDIA_TYPE")
    as_text = admin.patch("/api/v1/config", content='{"systemPrompt": "x"}', headers={"Content-Type": "text/plain"})
    assert "application/json" in assert_refused(as_text, 415, "UNSUPPORTED_MEDIA_TYPE")["message"]
    assert snapshot(admin, config_server) == before

    valid = admin.post(
        "/api/v1/config/validate", content=toml, headers={"Content-Type": "application/toml; charset=utf-8"}
    )
    assert valid.json() == {"valid": True, "errors": []}
    as_json = admin.post("/api/v1/config/validate", json={"systemPrompt": 3})
    assert as_json.json()["valid"] is False
    restored = admin.post("/api/v1/config/restore", content=toml, headers=TOML_BODY)
    assert restored.status_code == 200, restored.text
    assert setting_value(admin, "system_prompt") == "Changed by a restore."
    back = admin.post("/api/v1/config/restore", content=before[2], headers=TOML_BODY)
    assert back.status_code == 200, back.text
    assert config_file(config_server).read_text() == before[2]


def test_without_a_token_the_host_must_be_a_loopback_name(admin: httpx.Client, config_server: ServerProcess) -> None:
    before = snapshot(admin, config_server)
    for host in ("evil.example", f"evil.example:{config_server.port}", "localhost.evil.example", "10.0.0.5"):
        error = assert_refused(admin.get("/api/v1/config", headers={"Host": host}), 403, "UNAUTHORIZED")
        assert error["details"]["reason"] == "host_not_loopback"
    rebound = admin.patch("/api/v1/config", json={"systemPrompt": "pwned"}, headers={"Host": "evil.example"})
    assert_refused(rebound, 403, "UNAUTHORIZED")
    assert_refused(admin.get("/api/v1/model-configs", headers={"Host": "evil.example"}), 403, "UNAUTHORIZED")
    assert snapshot(admin, config_server) == before
    for host in (f"localhost:{config_server.port}", f"127.0.0.1:{config_server.port}", f"[::1]:{config_server.port}"):
        assert admin.get("/api/v1/config", headers={"Host": host}).status_code == 200, host


def test_load_and_unload_are_admin_actions(admin: httpx.Client, config_server: ServerProcess) -> None:
    def loaded() -> bool:
        return admin.get("/api/v1/models/hf/tiny").json()["loaded"]

    admin.post("/api/v1/models/hf/tiny/unload")
    assert_refused(admin.post("/api/v1/models/hf/tiny/load", headers=EVIL), 403, "CROSS_ORIGIN")
    assert_refused(admin.post("/api/v1/models/hf/tiny/load", headers={"Host": "evil.example"}), 403, "UNAUTHORIZED")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_refused(
        admin.post("/api/v1/models/hf/tiny/load", content="a=1", headers=form), 415, "UNSUPPORTED_MEDIA_TYPE"
    )
    assert not loaded()
    assert admin.post("/api/v1/models/hf/tiny/load").status_code == 200
    assert loaded()
    assert_refused(admin.post("/api/v1/models/hf/tiny/unload", headers=EVIL), 403, "CROSS_ORIGIN")
    assert_refused(admin.post("/api/v1/models/hf/tiny/unload", headers={"Host": "evil.example"}), 403, "UNAUTHORIZED")
    assert loaded()
    assert admin.post("/api/v1/models/hf/tiny/unload").status_code == 200
    assert not loaded()
    # reading the catalog stays open to everyone
    assert admin.get("/api/v1/models", headers={**EVIL, "Host": "evil.example"}).status_code == 200


def test_the_services_own_origin_is_allowed(admin: httpx.Client, config_server: ServerProcess) -> None:
    own = {"Origin": f"http://127.0.0.1:{config_server.port}"}
    assert admin.get("/api/v1/config", headers=own).status_code == 200
    changed = admin.patch("/api/v1/config", json={"systemPrompt": "Same origin"}, headers=own)
    assert changed.status_code == 200, changed.text
    assert admin.patch("/api/v1/config", json={"systemPrompt": None}, headers=own).status_code == 200
    assert admin.post("/api/v1/models/hf/tiny/unload", headers=own).status_code == 200
    ipv6 = {"Origin": f"http://[::1]:{config_server.port}", "Host": f"[::1]:{config_server.port}"}
    assert admin.get("/api/v1/config", headers=ipv6).status_code == 200
    # another scheme, port or host name is another origin, and so is an opaque one
    for origin in (
        f"https://127.0.0.1:{config_server.port}",
        f"http://127.0.0.1:{config_server.port + 1}",
        f"http://localhost:{config_server.port}",
        "http://127.0.0.1",
        "null",
    ):
        assert_refused(admin.get("/api/v1/config", headers={"Origin": origin}), 403, "CROSS_ORIGIN")


def test_the_guard_refuses_clients_that_are_not_loopback() -> None:
    check_loopback("127.0.0.1", "127.0.0.1:4000")
    check_loopback("::1", "[::1]:4000")
    check_loopback("::ffff:127.0.0.1", "localhost")
    with pytest.raises(ServiceError) as refused:
        check_loopback("192.0.2.7", "127.0.0.1:4000")
    assert (refused.value.status, refused.value.code) == (403, "UNAUTHORIZED")
    assert refused.value.details == {"reason": "client_not_loopback"}


def test_an_origin_is_the_same_with_or_without_its_default_port() -> None:
    refuse_foreign_origin({"origin": "http://localhost", "host": "localhost:80"}, "http")
    refuse_foreign_origin({"origin": "https://LOCALHOST:443", "host": "localhost"}, "https")
    for origin, host in (("http://localhost", "localhost:8080"), ("http://localhost/x", "localhost"), ("x", "a")):
        with pytest.raises(ServiceError) as refused:
            refuse_foreign_origin({"origin": origin, "host": host}, "http")
        assert (refused.value.status, refused.value.code) == (403, "CROSS_ORIGIN")
