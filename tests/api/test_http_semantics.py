"""HTTP behaviour the OpenAPI document cannot express: 405 with `Allow`, error texts that do not repeat
the URL, the content type of the endless config event stream; and bad input the fuzzing runs found."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.server import new_id


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("TRACE", "/", {"GET"}, id="trace-root"),
        pytest.param("TRACE", "/api/v1/conversations", {"GET", "POST"}, id="trace-conversations"),
        pytest.param("PUT", "/api/v1/conversations", {"GET", "POST"}, id="put-conversations"),
        pytest.param("TRACE", "/api/v1/config", {"GET", "PATCH"}, id="trace-config"),
    ],
)
def test_an_unsupported_method_is_405_with_allow(api: httpx.Client, method: str, path: str, allowed: set[str]) -> None:
    response = api.request(method, path)
    assert response.status_code == 405, response.text
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    allow = {part.strip() for part in response.headers["allow"].split(",")}
    assert allowed <= allow
    assert method not in allow


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param("/api/v1/config/revisions", {"limit": "àSECRET-TEXT"}, id="bad-int"),
        pytest.param("/api/v1/conversations", {"limit": "0", "token": "SECRET-TEXT"}, id="out-of-range"),
        pytest.param("/api/v1/usage", {"period": "week", "q": "SECRET-TEXT"}, id="bad-literal"),
    ],
)
def test_a_validation_error_does_not_repeat_the_query(api: httpx.Client, path: str, params: dict[str, str]) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message == f"Validation failed for GET {path}"
    assert "SECRET-TEXT" not in response.text
    assert "?" not in message


def test_a_missing_parameter_names_it_without_the_url(api: httpx.Client) -> None:
    conversation_id = new_id()
    assert api.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "t"}).status_code == 201
    response = api.delete(f"/api/v1/conversations/{conversation_id}/messages", params={"other": "SECRET-TEXT"})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "fromId" in message
    assert conversation_id not in message
    assert "SECRET-TEXT" not in response.text


def test_the_config_event_stream_is_text_event_stream(api: httpx.Client) -> None:
    with api.stream("GET", "/api/v1/config/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert next(response.iter_lines()) == ": connected"


def test_a_refused_config_change_naming_a_nul_key_is_400_and_recorded(api: httpx.Client) -> None:
    response = api.patch("/api/v1/config", content=b'{"a\\u0000b": 1}', headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    (latest,) = api.get("/api/v1/config/revisions", params={"limit": 1}).json()["revisions"]
    assert latest["valid"] is False
    assert latest["applied"] is False
    assert "unknown key" in latest["error"]
