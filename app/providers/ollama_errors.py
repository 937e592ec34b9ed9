"""Ollama's failures in the one error set: HTTP statuses, `{"error": ...}` bodies and lines, transport errors.

Ollama answers errors as `{"error": "<text>"}` with a 4xx/5xx status, and reports a failure in the middle
of a streamed reply as one more NDJSON line with an `error` field. Its texts are not stable API, so only
a few well-known words refine the mapping; the status decides the rest.

Messages and details go to clients, so they name the provider but never its address; the address of a
failed host is written to the log, where the operator looks for it.
"""

from __future__ import annotations

import httpx

from app.errors import ErrorCode, ServiceError
from app.providers.http import body_text, json_or_none

INSTALL_HINT = "start it with `ollama serve` or set OLLAMA_HOST"


def error_text(body: bytes) -> str:
    """The `error` field of an Ollama error body, else the body itself (shortened)."""
    data = json_or_none(body)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return body_text(body)


def _split(model: str) -> tuple[str, str]:
    """(provider, native name) of a full name: `ollama/llama3` or, for a named Ollama host, `gpu-box/llama3`."""
    provider, _, native = model.partition("/")
    return provider, native


def _server_side_code(text: str) -> ErrorCode:
    lowered = text.lower()
    if "memory" in lowered:
        return ErrorCode.MEMORY_EXCEEDED
    if "load" in lowered or "llama runner" in lowered:
        return ErrorCode.MODEL_LOAD_FAILED
    return ErrorCode.GENERATION_FAILED


def from_status(status: int, text: str, model: str) -> ServiceError:
    """An error answer from Ollama (`model` is the full name, `ollama/...`)."""
    provider, native = _split(model)
    details = {"provider": provider, "model": model, "upstreamStatus": status, "upstreamError": text}
    lowered = text.lower()
    if status == 404:
        return ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {native} is not installed in Ollama; pull it with `ollama pull {native}`",
            details=details,
        )
    if status == 400:
        if "support" in lowered:
            return ServiceError(
                ErrorCode.CAPABILITY_UNSUPPORTED, f"Ollama refused the request: {text}", details=details
            )
        if "context" in lowered and ("exceed" in lowered or "too long" in lowered):
            return ServiceError(
                ErrorCode.CONTEXT_LENGTH_EXCEEDED, f"Ollama refused the request: {text}", details=details
            )
        return ServiceError(ErrorCode.INVALID_REQUEST, f"Ollama refused the request: {text}", details=details)
    if status in (429, 503):
        return ServiceError(ErrorCode.OVERLOADED, f"Ollama is busy ({text}); try again shortly", details=details)
    if status >= 500:
        return ServiceError(_server_side_code(text), f"Ollama failed on {native}: {text}", details=details)
    return ServiceError(
        ErrorCode.PROVIDER_UNAVAILABLE, f"Ollama answered {status}: {text}", status=503, details=details
    )


def from_stream_line(text: str, model: str) -> ServiceError:
    """An `{"error": ...}` line in the middle of a streamed reply."""
    provider, native = _split(model)
    return ServiceError(
        _server_side_code(text),
        f"Ollama failed while generating with {native}: {text}",
        details={"provider": provider, "model": model, "upstreamError": text},
    )


def label(provider: str) -> str:
    """How a message names an Ollama provider: the main one is "Ollama", another host by its name."""
    return "Ollama" if provider == "ollama" else f"Ollama provider {provider}"


def from_transport(exc: httpx.HTTPError, model: str | None, started: bool, provider: str) -> ServiceError:
    """A transport failure; `started` says whether part of the reply had already arrived."""
    details = {"provider": provider, **({"model": model} if model else {})}
    name = label(provider)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, f"{name} is not reachable; {INSTALL_HINT}", details=details)
    if isinstance(exc, httpx.TimeoutException):
        what = "the next part of the reply" if started else "an answer"
        return ServiceError(ErrorCode.TIMEOUT, f"{name} took too long to send {what}", details=details)
    if started:
        return ServiceError(
            ErrorCode.GENERATION_FAILED, f"{name} closed the connection in the middle of the reply", details=details
        )
    return ServiceError(
        ErrorCode.PROVIDER_UNAVAILABLE, f"{name} closed the connection ({type(exc).__name__})", details=details
    )
