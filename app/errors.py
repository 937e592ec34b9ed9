"""The one error set every client sees, and the exception that carries it.

Services raise `ServiceError`; REST turns it into `{"error": {"code", "message", "details"}}` with its
HTTP status, GraphQL puts the code in `extensions.code` (graphql-core copies `.extensions` from the
original exception), and SSE sends it as `event: error`. Nothing else decides an error's shape.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    MEMORY_EXCEEDED = "MEMORY_EXCEEDED"
    CONTEXT_LENGTH_EXCEEDED = "CONTEXT_LENGTH_EXCEEDED"
    CAPABILITY_UNSUPPORTED = "CAPABILITY_UNSUPPORTED"
    # a model that cannot be removed now: replies are being generated with it
    MODEL_IN_USE = "MODEL_IN_USE"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    OVERLOADED = "OVERLOADED"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    GENERATION_FAILED = "GENERATION_FAILED"
    # Codes for the storage side of the service, which the architecture's model-centred set lacks.
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Admin endpoints: a request from another web origin, and a body of a content type they do not take.
    CROSS_ORIGIN = "CROSS_ORIGIN"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"


DEFAULT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.PROVIDER_UNAVAILABLE: 503,
    ErrorCode.MODEL_LOAD_FAILED: 500,
    ErrorCode.MEMORY_EXCEEDED: 507,
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorCode.CAPABILITY_UNSUPPORTED: 400,
    ErrorCode.MODEL_IN_USE: 409,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.GENERATION_FAILED: 502,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.CROSS_ORIGIN: 403,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
}


class ServiceError(Exception):
    """An error with a stable code, a sentence a person can act on, and optional structured details."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or DEFAULT_STATUS[code]
        self.details = details or {}

    @property
    def extensions(self) -> dict[str, Any]:
        """What GraphQL shows in `errors[].extensions`."""
        return {"code": str(self.code), **({"details": self.details} if self.details else {})}

    def to_body(self) -> dict[str, Any]:
        """The REST error body."""
        return {"error": {"code": str(self.code), "message": self.message, "details": self.details}}


def invalid(message: str, **details: Any) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_REQUEST, message, details=details)
