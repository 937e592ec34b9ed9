"""Limits on wrong passwords: per private conversation and per client address, in a sliding window.

Guessing a password takes many wrong tries; an owner who mistypes takes a few. A try over either limit
is refused before bcrypt runs, so a guesser can neither learn anything nor spend the server's CPU. A try
counts from the moment it is admitted (so concurrent tries cannot slip past the limit together) and is
forgotten again when the password was right: only failures fill the window.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError

#: the address of the client whose request the current task serves (uvicorn applies trusted proxy headers)
client_address: ContextVar[str | None] = ContextVar("client_address", default=None)

#: forget idle keys once this many are held, so many one-off clients cannot grow memory without bound
_PRUNE_AT = 10_000


def remember_client_address(app: ASGIApp) -> ASGIApp:
    """Middleware: make the request's client address known to the password check, wherever it runs."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client") if scope["type"] == "http" else None
        token = client_address.set(client[0] if client else None)
        try:
            await app(scope, receive, send)
        finally:
            client_address.reset(token)

    return wrapped


def client_key(address: str) -> str:
    """The client an address counts for: an IPv6 address by its /64 (one host may hold the whole prefix)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def password_attempt_limits(settings: Settings) -> dict[str, Any]:
    """The limits the settings ask for, as `PasswordAttempts` and its `configure` take them."""
    return {
        "per_conversation": settings.auth_failures_per_conversation,
        "per_client": settings.auth_failures_per_client,
        "window_s": settings.auth_failure_window_s,
    }


@dataclass(frozen=True)
class Attempt:
    """One admitted password check: the keys it counts against and when it started."""

    keys: tuple[str, ...]
    at: float


class PasswordAttempts:
    """Counts password failures per conversation and per client address within `window_s` seconds."""

    def __init__(
        self,
        *,
        per_conversation: int = 10,
        per_client: int = 30,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        config: ConfigSource | None = None,
    ) -> None:
        #: where the limits come from when given (the published configuration: they apply live)
        self.config = config
        self.per_conversation = per_conversation
        self.per_client = per_client
        self.window_s = window_s
        self._clock = clock
        self._tries: dict[str, deque[float]] = {}

    def configure(self, *, per_conversation: int, per_client: int, window_s: float) -> None:
        """New limits apply to the next check; failures already counted stay counted."""
        self.per_conversation, self.per_client, self.window_s = per_conversation, per_client, window_s

    def admit(self, conversation_id: str, client: str | None) -> Attempt:
        """Count a check that is about to run, or refuse it (TOO_MANY_ATTEMPTS) when a limit is reached."""
        if self.config is not None:
            self.configure(**password_attempt_limits(self.config.settings))
        now = self._clock()
        limits = [(f"conversation:{conversation_id}", self.per_conversation)]
        if client:
            limits.append((f"client:{client_key(client)}", self.per_client))
        waits = [self._wait(key, limit, now) for key, limit in limits]
        if any(wait > 0 for wait in waits):
            retry_after = max(1, math.ceil(max(waits)))
            raise ServiceError(
                ErrorCode.TOO_MANY_ATTEMPTS,
                f"Too many wrong passwords; try again in {retry_after} seconds",
                details={"retryAfterS": retry_after},
            )
        if len(self._tries) >= _PRUNE_AT:
            self._prune(now)
        for key, _ in limits:
            self._tries.setdefault(key, deque()).append(now)
        return Attempt(tuple(key for key, _ in limits), now)

    def passed(self, attempt: Attempt) -> None:
        """The password was right: the check no longer counts as a failure."""
        for key in attempt.keys:
            tries = self._tries.get(key)
            if tries is not None and attempt.at in tries:
                tries.remove(attempt.at)

    def _wait(self, key: str, limit: int, now: float) -> float:
        """Seconds until `key` may try again (0 when it may now), after dropping tries out of the window."""
        tries = self._tries.get(key)
        if tries is None:
            return 0.0
        while tries and tries[0] <= now - self.window_s:
            tries.popleft()
        if len(tries) < limit:
            return 0.0
        # the try that must leave the window before the count is under the limit again
        return tries[len(tries) - limit] + self.window_s - now

    def _prune(self, now: float) -> None:
        for key in [key for key, tries in self._tries.items() if not tries or tries[-1] <= now - self.window_s]:
            del self._tries[key]
