"""Every error of the one error set has its OpenAI status, type and code, in one table."""

from __future__ import annotations

import pytest

from app.errors import ErrorCode, ServiceError
from app.openai_api_errors import OPENAI_ERRORS, openai_error


def test_every_error_code_has_an_openai_answer() -> None:
    assert set(OPENAI_ERRORS) == set(ErrorCode)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServiceError(ErrorCode.MODEL_NOT_FOUND, "no"), (404, "invalid_request_error", "model_not_found")),
        (ServiceError(ErrorCode.INVALID_REQUEST, "no"), (400, "invalid_request_error", None)),
        (ServiceError(ErrorCode.UNAUTHORIZED, "no"), (401, "invalid_request_error", "invalid_api_key")),
        (ServiceError(ErrorCode.OVERLOADED, "busy"), (503, "server_error", "overloaded")),
        (ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, "down"), (503, "server_error", "provider_unavailable")),
        (ServiceError(ErrorCode.GENERATION_FAILED, "failed"), (502, "server_error", "generation_failed")),
        (ServiceError(ErrorCode.INTERNAL_ERROR, "oops"), (500, "server_error", None)),
        # a status the error chose itself: a refused client, a wrong method
        (
            ServiceError(ErrorCode.UNAUTHORIZED, "no", status=403, details={"reason": "host_not_loopback"}),
            (403, "permission_error", "host_not_loopback"),
        ),
        (ServiceError(ErrorCode.INVALID_REQUEST, "no", status=405), (405, "invalid_request_error", None)),
    ],
)
def test_statuses_types_and_codes(error: ServiceError, expected: tuple[int, str, str | None]) -> None:
    status, body = openai_error(error)
    assert (status, body.error.type, body.error.code) == expected
    assert body.error.message == error.message


def test_param_names_the_field_at_fault() -> None:
    _, named = openai_error(ServiceError(ErrorCode.INVALID_REQUEST, "no", details={"field": "n"}))
    assert named.error.param == "n"
    problems = {"problems": [{"message": "Expected `float` <= 10", "key": "temperature", "source": "body"}]}
    _, validated = openai_error(ServiceError(ErrorCode.INVALID_REQUEST, "no", details=problems))
    assert validated.error.param == "temperature"
