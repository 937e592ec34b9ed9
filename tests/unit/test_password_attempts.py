"""The wrong-password window: what it counts, when it reopens, and what it says to wait."""

from __future__ import annotations

import pytest

from app.errors import ErrorCode, ServiceError
from app.services.password_attempts import PasswordAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_slide_out_of_the_window_and_retry_after_says_when() -> None:
    clock = Clock()
    attempts = PasswordAttempts(per_conversation=2, per_client=100, window_s=60, clock=clock)
    attempts.admit("c", "1.2.3.4")
    clock.now += 30
    attempts.admit("c", "1.2.3.4")
    with pytest.raises(ServiceError) as refused:
        attempts.admit("c", "1.2.3.4")
    assert refused.value.code is ErrorCode.TOO_MANY_ATTEMPTS
    assert refused.value.status == 429
    assert refused.value.details["retryAfterS"] == 30  # the first failure leaves the window in 30 s
    clock.now += 30
    attempts.admit("c", "1.2.3.4")  # one slid out: one more may be tried


def test_checks_in_flight_count_so_concurrent_guesses_cannot_pass_together() -> None:
    attempts = PasswordAttempts(per_conversation=3, per_client=100, window_s=60, clock=Clock())
    admitted = [attempts.admit("c", None) for _ in range(3)]  # none has answered yet
    with pytest.raises(ServiceError):
        attempts.admit("c", None)
    attempts.passed(admitted[0])  # a right password stops counting
    attempts.admit("c", None)


def test_the_client_limit_spans_conversations_and_a_missing_address_has_none() -> None:
    attempts = PasswordAttempts(per_conversation=100, per_client=2, window_s=60, clock=Clock())
    attempts.admit("a", "10.0.0.1")
    attempts.admit("b", "10.0.0.1")
    with pytest.raises(ServiceError):
        attempts.admit("c", "10.0.0.1")
    attempts.admit("c", "10.0.0.2")
    for conversation in "defgh":
        attempts.admit(conversation, None)


def test_an_ipv6_client_counts_by_its_64_prefix() -> None:
    attempts = PasswordAttempts(per_conversation=100, per_client=2, window_s=60, clock=Clock())
    attempts.admit("a", "2001:db8:1:2::1")
    attempts.admit("b", "2001:db8:1:2:ffff::9")
    with pytest.raises(ServiceError):
        attempts.admit("c", "2001:db8:1:2::abcd")
    attempts.admit("c", "2001:db8:1:3::1")


def test_new_limits_apply_to_the_next_check() -> None:
    attempts = PasswordAttempts(per_conversation=5, per_client=100, window_s=60, clock=Clock())
    attempts.admit("c", None)
    attempts.configure(per_conversation=1, per_client=100, window_s=60)
    with pytest.raises(ServiceError):
        attempts.admit("c", None)
