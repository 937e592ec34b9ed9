"""An OpenAI-compatible server's failures in the one error set: HTTP statuses, error bodies and events, transport.

Such servers answer errors as `{"error": {"message": ..., "type": ..., "code": ...}}` (OpenAI, vLLM, LiteLLM,
llama.cpp), some as `{"message": ...}` or `{"detail": ...}`, and report a failure in the middle of a streamed
reply as one more `data:` event with an `error` object. The table:

| upstream | code | why |
|---|---|---|
| 401, 403 | PROVIDER_UNAVAILABLE | the key is wrong or lacks access: an operator's fix, not the request's fault |
| 404 on a chat | MODEL_NOT_FOUND | the server does not serve that model |
| 404 on a listing | PROVIDER_UNAVAILABLE | the base URL is not an OpenAI-compatible `/v1` root |
| 429, 503 | OVERLOADED | busy: retried, then the fallback models |
| 400, 422 | INVALID_REQUEST, or CONTEXT_LENGTH_EXCEEDED / CAPABILITY_UNSUPPORTED as the text says | the request's own |
| other 4xx, 5xx | PROVIDER_UNAVAILABLE | retried, then the fallback models |
| refused, reset, timed out before any text | PROVIDER_UNAVAILABLE | retried, then the fallback models |
| timed out or cut off after some text | TIMEOUT, GENERATION_FAILED | too late for a fallback |

Messages and details go to clients, so they name the provider but never its address (the log has it) or its key.
"""

from __future__ import annotations

import httpx

from app.errors import ErrorCode, ServiceError
from app.providers.http import body_text, json_or_none


def error_text(body: bytes) -> str:
    """The message of an error body (`error.message`, `error`, `message` or `detail`), else the body (shortened)."""
    return message_of(json_or_none(body)) or body_text(body)


def message_of(data: object) -> str:
    """The message of a decoded error body or error event; "" when it has none."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    for key in ("message", "detail"):
        if isinstance(data.get(key), str):
            return data[key]
    return ""


def label(provider: str) -> str:
    """How a message names the provider: the main one as "The OpenAI-compatible server", others by name."""
    return "The OpenAI-compatible server" if provider == "openai" else f"OpenAI-compatible provider {provider}"


def from_status(status: int, text: str, model: str, provider: str) -> ServiceError:
    """An error answer (`model` is the full name, `openai/...`, or "" for a request about no model)."""
    native = model.partition("/")[2]
    name = label(provider)
    details = {"provider": provider, **({"model": model} if model else {}), "upstreamStatus": status}
    details["upstreamError"] = text
    lowered = text.lower()
    if status in (401, 403):
        return ServiceError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"{name} refused the API key ({status}); check its api_key",
            details=details,
        )
    if status == 404:
        if not model:
            return ServiceError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{name} has no model list (404); its base URL should be the server's /v1 root",
                details=details,
            )
        return ServiceError(ErrorCode.MODEL_NOT_FOUND, f"{name} does not serve the model {native}", details=details)
    if status in (429, 503):
        return ServiceError(ErrorCode.OVERLOADED, f"{name} is busy ({status}); try again shortly", details=details)
    if status in (400, 413, 422):
        if "context" in lowered and ("length" in lowered or "exceed" in lowered or "too long" in lowered):
            code = ErrorCode.CONTEXT_LENGTH_EXCEEDED
        elif "image" in lowered or "vision" in lowered or "multimodal" in lowered:
            code = ErrorCode.CAPABILITY_UNSUPPORTED
        else:
            code = ErrorCode.INVALID_REQUEST
        return ServiceError(code, f"{name} refused the request: {text}", details=details)
    return ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, f"{name} answered {status}: {text}", details=details)


def from_stream_error(error: object, model: str, provider: str, started: bool) -> ServiceError:
    """An `error` event in the middle of a streamed reply; before any text, mapped like the status it names."""
    text = message_of({"error": error}) or "an error without a message"
    code = error.get("code") if isinstance(error, dict) else None
    if not started and isinstance(code, int) and 400 <= code < 600:
        return from_status(code, text, model, provider)
    return ServiceError(
        ErrorCode.GENERATION_FAILED,
        f"{label(provider)} failed while generating with {model.partition('/')[2]}: {text}",
        details={"provider": provider, "model": model, "upstreamError": text},
    )


def from_transport(exc: httpx.HTTPError, model: str | None, started: bool, provider: str) -> ServiceError:
    """A transport failure; `started` says whether part of the reply had already arrived."""
    details = {"provider": provider, **({"model": model} if model else {})}
    name = label(provider)
    if started:
        if isinstance(exc, httpx.TimeoutException):
            return ServiceError(
                ErrorCode.TIMEOUT, f"{name} took too long to send the next part of the reply", details=details
            )
        return ServiceError(
            ErrorCode.GENERATION_FAILED, f"{name} closed the connection in the middle of the reply", details=details
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        why = "is not reachable"
    elif isinstance(exc, httpx.TimeoutException):
        why = "took too long to answer"
    else:
        why = f"closed the connection ({type(exc).__name__})"
    return ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, f"{name} {why}", details=details)
