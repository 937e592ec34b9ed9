"""A circuit breaker per provider: stop sending requests to a backend that keeps failing, probe it later.

closed -> (N consecutive provider failures) -> open -> (cooldown passed) -> half_open: one probe request
-> success closes, failure re-opens. Client errors (a bad request, an unknown model, a prompt too long)
say nothing about the backend's health and never count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from app.errors import ErrorCode, ServiceError
from app.providers.types import CircuitStatus

CircuitState = Literal["closed", "open", "half_open"]

#: errors that mean "the backend is in trouble"; everything else is the request's or the model's own fault
PROVIDER_FAILURES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.PROVIDER_UNAVAILABLE,
        ErrorCode.OVERLOADED,
        ErrorCode.TIMEOUT,
        ErrorCode.GENERATION_FAILED,
        ErrorCode.INTERNAL_ERROR,
    }
)


def counts_as_failure(error: BaseException) -> bool:
    """Whether this error should count against the provider's circuit."""
    if isinstance(error, ServiceError):
        return error.code in PROVIDER_FAILURES
    return isinstance(error, Exception)  # an unexpected exception is the provider's fault


@dataclass(frozen=True)
class Outcome:
    """How the provider's last request went, and when (on the breaker's clock); `error` when it failed."""

    at: float
    error: BaseException | None = None


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        #: the last request that succeeded or failed for the provider's sake (client errors leave it)
        self.last_outcome: Outcome | None = None

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request go through now? In half-open, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def check(self) -> None:
        """`allow()` or raise PROVIDER_UNAVAILABLE saying when the provider will be tried again."""
        if self.allow():
            return
        snapshot = self.snapshot()
        raise ServiceError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"Provider {self.name} failed {self._failures} times in a row and is paused; "
            f"it will be tried again in {snapshot.retry_in_s or 0:.0f}s",
            details={"provider": self.name, "circuit": snapshot.state, "retryInS": snapshot.retry_in_s},
        )

    def release(self) -> None:
        """A probe ended with neither success nor failure (a client error): let the next request probe."""
        self._probing = False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False
        self.last_outcome = Outcome(self._clock())

    def record_failure(self, error: BaseException | None = None) -> None:
        self.last_outcome = Outcome(self._clock(), error)
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._probing = False

    def record(self, error: BaseException) -> None:
        """Count `error` if it is the provider's fault; otherwise just end a probe."""
        if counts_as_failure(error):
            self.record_failure(error)
        else:
            self.release()

    def snapshot(self) -> CircuitStatus:
        state = self.state
        if self._opened_at is None:
            return CircuitStatus(state=state, consecutive_failures=self._failures)
        remaining = max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
        return CircuitStatus(state=state, consecutive_failures=self._failures, retry_in_s=round(remaining, 3))
