"""The OpenAI-compatible API's errors: every failure as `{"error": {"message", "type", "param", "code"}}` with
OpenAI's status codes, so OpenAI clients raise their usual exceptions. The one mapping from our error codes.

Exceptions become the one `ServiceError` first (`http_errors.as_service_error`, as for the REST API); only
the rendering differs. An error after a stream started is one SSE `data:` line with the same body, and the
stream ends there (no `[DONE]`), which OpenAI's clients raise as an `APIError`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response

from app.errors import DEFAULT_STATUS, ErrorCode, ServiceError
from app.http_errors import EXCEPTION_HANDLERS, as_service_error, retry_after
from app.schemas.openai_api import OpenAIError, OpenAIErrorBody

INVALID = "invalid_request_error"
SERVER = "server_error"

#: our code -> (HTTP status, OpenAI error type, OpenAI error code)
OPENAI_ERRORS: dict[ErrorCode, tuple[int, str, str | None]] = {
    ErrorCode.INVALID_REQUEST: (400, INVALID, None),
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: (400, INVALID, "context_length_exceeded"),
    ErrorCode.CAPABILITY_UNSUPPORTED: (400, INVALID, "unsupported_capability"),
    ErrorCode.UNAUTHORIZED: (401, INVALID, "invalid_api_key"),
    ErrorCode.CROSS_ORIGIN: (403, "permission_error", "cross_origin"),
    ErrorCode.MODEL_NOT_FOUND: (404, INVALID, "model_not_found"),
    ErrorCode.NOT_FOUND: (404, INVALID, "not_found"),
    ErrorCode.CONFLICT: (409, INVALID, "conflict"),
    ErrorCode.MODEL_IN_USE: (409, INVALID, "model_in_use"),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, INVALID, "payload_too_large"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: (415, INVALID, "unsupported_media_type"),
    ErrorCode.TOO_MANY_ATTEMPTS: (429, "rate_limit_error", "rate_limit_exceeded"),
    ErrorCode.OVERLOADED: (503, SERVER, "overloaded"),
    ErrorCode.MEMORY_EXCEEDED: (503, SERVER, "memory_exceeded"),
    ErrorCode.PROVIDER_UNAVAILABLE: (503, SERVER, "provider_unavailable"),
    ErrorCode.MODEL_LOAD_FAILED: (500, SERVER, "model_load_failed"),
    ErrorCode.INTERNAL_ERROR: (500, SERVER, None),
    ErrorCode.GENERATION_FAILED: (502, SERVER, "generation_failed"),
    ErrorCode.TIMEOUT: (504, SERVER, "timeout"),
    ErrorCode.CANCELLED: (499, INVALID, "cancelled"),
}


def openai_error(error: ServiceError) -> tuple[int, OpenAIErrorBody]:
    """The status and body OpenAI would answer with; `param` names the field at fault. A client-error status
    an error chose itself (a refused client's 403, a wrong method's 405) is kept."""
    status, kind, code = OPENAI_ERRORS[error.code]
    if error.status != DEFAULT_STATUS[error.code] and 400 <= error.status < 500:
        status = error.status
        if status == 403:
            kind, code = "permission_error", str(error.details.get("reason") or code)
    param = error.details.get("field")
    problems = error.details.get("problems")
    if param is None and isinstance(problems, list) and problems and isinstance(problems[0], dict):
        param = problems[0].get("key")
    return status, OpenAIErrorBody(
        OpenAIError(message=error.message, type=kind, param=str(param) if param is not None else None, code=code)
    )


def openai_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    error, headers = as_service_error(request, exc)
    status, body = openai_error(_with_problem(error))
    return Response(body, status_code=status, headers={**retry_after(error), **headers})


def _with_problem(error: ServiceError) -> ServiceError:
    """A validation failure's message names its first problem (OpenAI clients show the message only)."""
    problems = error.details.get("problems")
    if error.code != ErrorCode.INVALID_REQUEST or not isinstance(problems, list) or not problems:
        return error
    first = problems[0]
    if not isinstance(first, dict) or not first.get("message"):
        return error
    where = f" at {first['key']}" if first.get("key") else ""
    return ServiceError(error.code, f"{first['message']}{where}", status=error.status, details=error.details)


def stream_error(exc: BaseException) -> bytes:
    """An error after the stream began: one `data:` line with the error body (the stream then ends)."""
    error = exc if isinstance(exc, ServiceError) else None
    _, body = openai_error(error or ServiceError(ErrorCode.INTERNAL_ERROR, "The reply failed on the server"))
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


#: for the `/v1` routes: the same exceptions as the REST API's handlers, rendered in OpenAI's shape
OPENAI_EXCEPTION_HANDLERS = dict.fromkeys(EXCEPTION_HANDLERS, openai_error_handler)
