"""`HTTPProvider`: what the providers that reach a server over HTTP share (Ollama, OpenAI-compatible servers).

One httpx client per provider, opened by `initialize` and closed by `shutdown`, with the provider's timeout for
every wait (connecting at most `CONNECT_TIMEOUT_S`, so a host that is down is reported quickly); JSON requests
whose failures become `ServiceError`s through the provider's own error table (the three `*_error` hooks).
The circuit breaker and the retries are the registry's, the same for every provider.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from app.errors import ServiceError
from app.providers.base import ModelProvider

CONNECT_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class HTTPProvider(ModelProvider):
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._transport = transport
        self._headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None

    async def initialize(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S)),
                transport=self._transport,
                headers=self._headers,
            )

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__}.initialize() was not called")
        return self._client

    # -- the provider's error table ----------------------------------------------------------------------

    @abstractmethod
    def transport_error(self, exc: httpx.HTTPError, model: str | None, started: bool) -> ServiceError:
        """A request that failed on the way (refused, timed out, cut off); `started`: part of a reply arrived."""

    @abstractmethod
    def status_error(self, status: int, body: bytes, model: str) -> ServiceError:
        """An error answer; `model` is the full name, or "" for a request about no model (a listing)."""

    @abstractmethod
    def not_json_error(self, path: str) -> ServiceError:
        """A success answer that is not JSON: the address most likely names another kind of server."""

    # -- JSON requests -----------------------------------------------------------------------------------

    async def get_json(self, path: str, limit_s: float | None = None) -> dict[str, Any]:
        try:
            response = await self.client.get(path, **({"timeout": limit_s} if limit_s else {}))
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, None, started=False) from exc
        return self.json_of(response, model="")

    async def post_json(self, path: str, body: dict[str, Any], model: str) -> dict[str, Any]:
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, model, started=False) from exc
        return self.json_of(response, model=model)

    def json_of(self, response: httpx.Response, model: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise self.status_error(response.status_code, response.content, model)
        try:
            data = msgspec.json.decode(response.content)
        except msgspec.DecodeError as exc:
            log.warning("%s at %s: %s did not answer JSON", self.name, self.base_url, response.request.url.path)
            raise self.not_json_error(response.request.url.path) from exc
        return data if isinstance(data, dict) else {}


def ms_since(started: float) -> float:
    """Milliseconds since a `time.perf_counter()` reading, rounded for reports."""
    return round((time.perf_counter() - started) * 1000, 2)
