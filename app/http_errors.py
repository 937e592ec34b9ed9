"""Exception handlers: every failure becomes `{"error": {"code", "message", "details"}}` in one place.

Handlers, not try/except in controllers. Unexpected exceptions are logged once with their cause and
answered with a generic 500 body: no stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from app.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)

STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.INVALID_REQUEST,
    429: ErrorCode.OVERLOADED,
    503: ErrorCode.PROVIDER_UNAVAILABLE,
}


def _respond(error: ServiceError, headers: Mapping[str, str] | None = None) -> Response[Any]:
    return Response(error.to_body(), status_code=error.status, headers={**retry_after(error), **(headers or {})})


def retry_after(error: ServiceError) -> dict[str, str]:
    """A `Retry-After` header for an error that says when to try again (a limit that will reopen)."""
    seconds = error.details.get("retryAfterS")
    return {"Retry-After": str(seconds)} if isinstance(seconds, int) else {}


def _without_url(request: Request[Any, Any, Any], detail: str) -> str:
    """Litestar's messages name the raw URL, query string included; clients get the route's template instead.

    The query string may hold anything a client sent (a password, a megabyte of text), and an answer that
    repeats it back lands in logs and pages it should not.
    """
    if detail.startswith("Validation failed for "):
        template = request.scope.get("path_template") or "this route"
        return f"Validation failed for {request.method} {template}"
    head, separator, _ = detail.partition(" for path ")
    return head if separator else detail


def as_service_error(request: Request[Any, Any, Any], exc: Exception) -> tuple[ServiceError, Mapping[str, str]]:
    """Any exception a route raises as the one error (and the headers its answer keeps): what every error body
    of the service, the REST one and the OpenAI-compatible one, is made from."""
    if isinstance(exc, ServiceError):
        return exc, {}
    if isinstance(exc, ValidationException):
        return _validation_error(request, exc), {}
    if isinstance(exc, HTTPException):  # Litestar's headers carry meaning: `Allow` on 405, for one
        return _http_error(request, exc), exc.headers or {}
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return unexpected_failure(), {}


def _is_malformed_body(exc: BaseException) -> bool:
    """True when the body could not be parsed at all (as opposed to parsed but invalid)."""
    cause: BaseException | None = exc
    for _ in range(4):
        cause = cause.__cause__ or cause.__context__ if cause is not None else None
        if isinstance(cause, msgspec.ValidationError):
            return False
        if isinstance(cause, msgspec.DecodeError):
            return True
    return False


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> ServiceError:
    problems = exc.extra if isinstance(exc.extra, list) else []
    message = _without_url(request, exc.detail) if exc.detail else "The request is not valid"
    if _is_malformed_body(exc):
        message = f"The request body is not valid JSON: {message}"
    return ServiceError(
        ErrorCode.INVALID_REQUEST, message, status=400, details={"problems": problems} if problems else {}
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> ServiceError:
    code = STATUS_CODES.get(
        exc.status_code, ErrorCode.INVALID_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
    )
    message = "Endpoint not found" if isinstance(exc, NotFoundException) else _without_url(request, exc.detail)
    if exc.status_code == 413:
        message = "The request body is too large"
    elif exc.status_code == 400 and _is_malformed_body(exc):
        message = f"The request body is not valid JSON: {message}"
    return ServiceError(code, message, status=exc.status_code)


def unexpected_failure() -> ServiceError:
    """What a client is told of a failure that is not its own (the details are in the log, never sent)."""
    return ServiceError(ErrorCode.INTERNAL_ERROR, "Something went wrong on the server; it has been logged")


def error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    error, headers = as_service_error(request, exc)
    return _respond(error, headers)


EXCEPTION_HANDLERS = {
    ServiceError: error_handler,
    ValidationException: error_handler,
    HTTPException: error_handler,
    Exception: error_handler,
}
