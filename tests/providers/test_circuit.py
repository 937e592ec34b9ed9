"""The circuit breaker: closed -> open after N provider failures -> half-open probe after the cooldown."""

from __future__ import annotations

import pytest

from app.errors import ErrorCode, ServiceError
from app.providers.circuit import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fail(breaker: CircuitBreaker, times: int, code: ErrorCode = ErrorCode.PROVIDER_UNAVAILABLE) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record(ServiceError(code, "boom"))


def test_opens_after_consecutive_failures_and_refuses_with_a_retry_time(clock: Clock) -> None:
    breaker = CircuitBreaker("ollama", failure_threshold=3, cooldown_s=10, clock=clock)
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 4
    with pytest.raises(ServiceError) as caught:
        breaker.check()
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert caught.value.details["circuit"] == "open"
    assert caught.value.details["retryInS"] == pytest.approx(6)


def test_a_success_resets_the_count(clock: Clock) -> None:
    breaker = CircuitBreaker("ollama", failure_threshold=3, clock=clock)
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_client_errors_never_count(clock: Clock) -> None:
    breaker = CircuitBreaker("ollama", failure_threshold=2, clock=clock)
    for code in (ErrorCode.INVALID_REQUEST, ErrorCode.MODEL_NOT_FOUND, ErrorCode.CONTEXT_LENGTH_EXCEEDED):
        fail(breaker, 3, code)
    assert breaker.state == "closed"
    assert breaker.snapshot().consecutive_failures == 0


def test_half_open_allows_one_probe_then_closes_on_success(clock: Clock) -> None:
    breaker = CircuitBreaker("hf", failure_threshold=1, cooldown_s=5, clock=clock)
    fail(breaker, 1)
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_a_failed_probe_reopens_for_another_cooldown(clock: Clock) -> None:
    breaker = CircuitBreaker("hf", failure_threshold=3, cooldown_s=5, clock=clock)
    fail(breaker, 3)
    clock.now += 6
    assert breaker.allow()
    breaker.record(ServiceError(ErrorCode.TIMEOUT, "slow"))
    assert breaker.state == "open"
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()


def test_a_probe_ending_in_a_client_error_lets_the_next_request_probe(clock: Clock) -> None:
    breaker = CircuitBreaker("hf", failure_threshold=1, cooldown_s=1, clock=clock)
    fail(breaker, 1)
    clock.now += 1
    assert breaker.allow()
    breaker.record(ServiceError(ErrorCode.INVALID_REQUEST, "bad"))
    assert breaker.state == "half_open"
    assert breaker.allow()
