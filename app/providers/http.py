"""`HTTPProvider`: what the providers that reach a server over HTTP share (Ollama, OpenAI-compatible servers).

One httpx client per provider, opened by `initialize` and closed by `shutdown`, with the provider's timeout for
every wait (connecting at most `CONNECT_TIMEOUT_S`, so a host that is down is reported quickly); JSON requests
and streamed replies whose failures become `ServiceError`s through the provider's own error table (the
`transport_failure`, `status_error` hooks); the health check, the not-JSON answer and the logging of transport
failures, which are the same for every such server. The circuit breaker and the retries are the registry's, the
same for every provider.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec

from app.errors import ErrorCode, ServiceError
from app.providers.base import ModelProvider
from app.providers.types import ProviderHealth

CONNECT_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class HTTPProvider(ModelProvider):
    #: the path whose JSON answer says the server is up (`health_check`)
    health_path: str
    #: what a not-JSON answer suggests checking: the address most likely names another kind of server
    address_hint: str

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

    @property
    @abstractmethod
    def label(self) -> str:
        """How messages name this provider (never by its address, which only the log carries)."""

    # -- health --------------------------------------------------------------------------------------------

    async def health_check(self) -> ProviderHealth:
        started = time.perf_counter()
        try:
            data = await self.get_json(self.health_path, limit_s=min(self.timeout_s, HEALTH_TIMEOUT_S))
        except ServiceError as exc:
            return ProviderHealth(status="unhealthy", latency_ms=ms_since(started), detail=exc.message)
        return ProviderHealth(status="healthy", latency_ms=ms_since(started), detail=self.health_detail(data))

    @abstractmethod
    def health_detail(self, data: dict[str, Any]) -> str:
        """What a healthy server's answer on `health_path` tells (its version, its model count)."""

    # -- the provider's error table ----------------------------------------------------------------------

    @abstractmethod
    def transport_failure(self, exc: httpx.HTTPError, model: str | None, started: bool) -> ServiceError:
        """A request that failed on the way (refused, timed out, cut off); `started`: part of a reply arrived."""

    @abstractmethod
    def status_error(self, status: int, body: bytes, model: str) -> ServiceError:
        """An error answer; `model` is the full name, or "" for a request about no model (a listing)."""

    def transport_error(self, exc: httpx.HTTPError, model: str | None, started: bool) -> ServiceError:
        """`transport_failure`, logged with the address the message leaves out, where the operator looks for it."""
        error = self.transport_failure(exc, model, started)
        log.warning("%s at %s: %s (%s: %s)", self.name, self.base_url, error.message, type(exc).__name__, exc)
        return error

    def not_json_error(self, path: str) -> ServiceError:
        """A success answer that is not JSON: the address most likely names another kind of server."""
        return ServiceError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"{self.label} did not answer JSON on {path}; {self.address_hint}",
            details={"provider": self.name},
        )

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

    # -- streamed replies ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def streaming(self, path: str, body: dict[str, Any], model: str) -> AsyncIterator[httpx.Response]:
        """A streamed POST, its error answer raised through `status_error`; leaving the block closes the HTTP
        stream, which is how the server learns to stop generating. Transport failures are the caller's to map:
        only it knows whether part of the reply had arrived."""
        async with self.client.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                raise self.status_error(response.status_code, await response.aread(), model)
            yield response


def stream_part(text: str, model: str, sender: str, kind: str) -> dict[str, Any]:
    """One JSON part of a streamed reply (an NDJSON line, a server-sent event's data); GENERATION_FAILED when it
    is not JSON, the message saying that `sender` sent a `kind` (a line, an event) that is not."""
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ServiceError(
            ErrorCode.GENERATION_FAILED,
            f"{sender} sent {article} {kind} that is not JSON in the middle of the reply",
            details={"provider": model.partition("/")[0], "model": model, kind: text[:200]},
        ) from None
    return data if isinstance(data, dict) else {}


def json_or_none(body: bytes) -> object:
    """An error body decoded, or None when it is not JSON."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


def body_text(body: bytes) -> str:
    """An error body as text for a message, when it carries no message of its own (shortened)."""
    return body.decode("utf-8", "replace").strip()[:500]


def ms_since(started: float) -> float:
    """Milliseconds since a `time.perf_counter()` reading, rounded for reports."""
    return round((time.perf_counter() - started) * 1000, 2)
