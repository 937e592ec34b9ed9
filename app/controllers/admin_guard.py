"""The guard of every admin endpoint (configuration, model load and unload).

A browser on the operator's machine is a loopback client, so the client address alone cannot tell the
operator from a web page they happen to visit. The guard therefore also refuses requests sent from another
origin, requests whose `Host` is not a loopback name while no token is set (DNS rebinding), and bodies
whose content type a page could send without a CORS preflight.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from app.errors import ErrorCode, ServiceError

BODY_TYPES = "admin_body_types"
"""The `opt` key of an admin handler that takes a body: the media types it accepts."""

JSON = "application/json"
TOML = "application/toml"
DEFAULT_PORTS = {"http": 80, "https": 443}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def takes(*media_types: str) -> dict[str, Any]:
    """The `opt` of an admin handler whose body must be one of `media_types`."""
    return {BODY_TYPES: media_types}


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Same origin always; a bearer token when one is configured, else a loopback client and `Host`;
    and the handler's declared body type."""
    headers = connection.headers
    refuse_foreign_origin(headers, connection.scope.get("scheme", "http"))
    # the guard runs before dependency injection: the published configuration is the one thing it reads
    token: str = connection.app.state.services.config.settings.beth_admin_token
    if token:
        check_token(headers.get("authorization", ""), token)
    else:
        check_loopback(connection.client.host if connection.client else "", headers.get("host", ""))
    if connection.scope.get("method", "GET") in BODY_METHODS:
        check_body_type(headers, tuple(handler.opt.get(BODY_TYPES, ())))


def refuse_foreign_origin(headers: Mapping[str, str], scheme: str, routes: str = "Admin endpoints") -> None:
    """A request that names an `Origin` must come from this service's own (scheme, host, port); `routes` names
    the routes that refuse it in the message."""
    origin = headers.get("origin")
    if origin is None:
        return  # not sent by a browser page on another site: curl, scripts, the CLI
    own = _origin(scheme, headers.get("host", ""))
    if own is None or _parse_origin(origin) != own:
        raise ServiceError(
            ErrorCode.CROSS_ORIGIN,
            f"{routes} refuse requests from other web origins; call them from a script or from this "
            "service's own origin",
            details={"origin": origin[:200]},
        )


def check_token(header: str, token: str) -> None:
    given = bearer_token(header)
    if not given:
        raise ServiceError(ErrorCode.UNAUTHORIZED, "Send Authorization: Bearer <BETH_ADMIN_TOKEN>")
    if not same_secret(given, token):
        raise ServiceError(ErrorCode.UNAUTHORIZED, "The admin token is not valid", status=403)


def bearer_token(header: str) -> str:
    """The token of an `Authorization: Bearer <token>` header; empty when there is none."""
    scheme, _, given = header.partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def same_secret(given: str, secret: str) -> bool:
    """Compared in constant time, so the answer's timing does not tell how much of a guess was right."""
    return hmac.compare_digest(given.encode(), secret.encode())


def check_loopback(client: str, host_header: str) -> None:
    """Without a token: a loopback client that addressed the service by a loopback name."""
    reason = loopback_refusal(client, host_header)
    if reason == "client_not_loopback":
        raise ServiceError(
            ErrorCode.UNAUTHORIZED,
            "Admin endpoints answer loopback clients only; set BETH_ADMIN_TOKEN to allow others",
            status=403,
            details={"reason": reason},
        )
    if reason == "host_not_loopback":
        raise ServiceError(
            ErrorCode.UNAUTHORIZED,
            "Admin endpoints answer requests addressed to localhost, 127.0.0.1 or [::1] only; "
            "set BETH_ADMIN_TOKEN to allow other host names",
            status=403,
            details={"reason": reason},
        )


def loopback_refusal(client: str, host_header: str) -> str | None:
    """Why a request is not a loopback client's that addressed the service by a loopback name (`Host`, against
    DNS rebinding): `client_not_loopback` or `host_not_loopback`; None when it is. Every route that answers
    loopback clients only (the admin endpoints, the OpenAI-compatible API without keys) asks here."""
    if not is_loopback_address(client):
        return "client_not_loopback"
    host = _hostname(host_header)
    if host is None or not (host == "localhost" or is_loopback_address(host)):
        return "host_not_loopback"
    return None


def check_body_type(headers: Mapping[str, str], accepted: tuple[str, ...]) -> None:
    """The body must carry one of the declared media types; a handler that declares none takes no body."""
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if not accepted:
        if _has_body(headers):
            raise ServiceError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                "This endpoint takes no request body",
                details={"contentType": media_type},
            )
        return
    if media_type not in accepted:
        raise ServiceError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Send the body as {' or '.join(f'Content-Type: {kind}' for kind in accepted)}",
            details={"contentType": media_type, "accepted": list(accepted)},
        )


def is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _has_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length", "").strip()
    return "transfer-encoding" in headers or (length not in ("", "0"))


def _hostname(host_header: str) -> str | None:
    """The host name of a `Host` header (`[::1]:4000` -> `::1`), lower-case; None when it is not one."""
    try:
        parts = urlsplit(f"//{host_header.strip()}")
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return None
    return parts.hostname or None


def _origin(scheme: str, host_header: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{host_header.strip()}")
        port = parts.port or DEFAULT_PORTS.get(scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return scheme.lower(), parts.hostname, port


def _parse_origin(origin: str) -> tuple[str, str, int] | None:
    """`scheme://host[:port]` as a tuple; None for `null` and anything that is not a plain origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return parts.scheme.lower(), parts.hostname, port
