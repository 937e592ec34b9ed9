"""Who may use the OpenAI-compatible API (`/v1`).

With `openai_api_keys` set, a request must send `Authorization: Bearer <one of the keys>`. Without keys the
admin endpoints' rule applies: loopback clients that address the service by a loopback name, and no request
from another web origin (a page the operator visits must not spend their models).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from app.controllers.admin_guard import bearer_token, loopback_refusal, refuse_foreign_origin, same_secret
from app.errors import ErrorCode, ServiceError

ROUTES = "The OpenAI-compatible API"


def openai_clients_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    headers = connection.headers
    # the guard runs before dependency injection: the published configuration is the one thing it reads
    keys: tuple[str, ...] = connection.app.state.services.config.settings.openai_api_keys
    if keys:
        check_api_key(headers.get("authorization", ""), keys)
        return
    refuse_foreign_origin(headers, connection.scope.get("scheme", "http"), ROUTES)
    reason = loopback_refusal(connection.client.host if connection.client else "", headers.get("host", ""))
    if reason is not None:
        raise ServiceError(
            ErrorCode.UNAUTHORIZED,
            f"{ROUTES} answers loopback clients that address the service as localhost, 127.0.0.1 or [::1] only; "
            "set OPENAI_API_KEYS to allow others",
            status=403,
            details={"reason": reason},
        )


def check_api_key(header: str, keys: tuple[str, ...]) -> None:
    """One of `keys` (the key itself is never echoed or logged)."""
    given = bearer_token(header)
    if not given:
        raise ServiceError(ErrorCode.UNAUTHORIZED, "Send Authorization: Bearer <API key> (one of OPENAI_API_KEYS)")
    if not any([same_secret(given, key) for key in keys]):  # every key compared: no early exit
        raise ServiceError(ErrorCode.UNAUTHORIZED, "Incorrect API key provided")
