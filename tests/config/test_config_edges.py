"""Configuration edge cases over real HTTP, on SQLite and PostgreSQL: removing what is not there, disabled
models left out of the lists clients choose from, and an execution provider this machine cannot run."""

from __future__ import annotations

import httpx


def test_null_on_a_model_without_an_api_value_removes_nothing(admin: httpx.Client) -> None:
    before = admin.get("/api/v1/config").json()
    assert "llama3.1:8b" not in before["models"]
    response = admin.patch("/api/v1/config", json={"models": {"llama3.1:8b": None}})
    assert response.status_code == 200, response.text
    after = admin.get("/api/v1/config").json()
    assert after["models"] == before["models"]
    assert after["settings"] == before["settings"]
