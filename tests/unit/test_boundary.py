"""The shared input rules: a NUL or an over-long value is refused with the field named; any other text passes."""

from __future__ import annotations

import msgspec
import pytest

from app.errors import ErrorCode, ServiceError
from app.schemas.boundary import MAX_NAME_CHARS, Identifier, MessageText, Name, check
from app.schemas.conversations import AddMessageRequest, CreateConversationRequest


@pytest.mark.parametrize("rule", [Identifier, Name, MessageText])
def test_a_nul_is_refused_with_the_field_named(rule: object) -> None:
    with pytest.raises(ServiceError) as caught:
        check("tabName", "a\x00b", rule)
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert caught.value.message == "tabName contains a NUL character"
    assert caught.value.details == {"field": "tabName"}


def test_a_long_name_is_refused_with_its_limit() -> None:
    with pytest.raises(ServiceError) as caught:
        check("llmModel", "m" * (MAX_NAME_CHARS + 1), Name)
    assert caught.value.message == f"llmModel is longer than {MAX_NAME_CHARS} characters"


@pytest.mark.parametrize("text", ["Grüße, 世界! 🚀 \u200b", "line\nbreak\ttab", None, ""])
def test_any_other_text_passes_unchanged(text: str | None) -> None:
    assert check("text", text, MessageText) == text


def test_rest_bodies_refuse_a_nul_while_decoding() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"text": "a\\u0000b"}', type=AddMessageRequest)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"text": "hi", "model": "m\\u0000"}', type=AddMessageRequest)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"tabName": "t\\u0000"}', type=CreateConversationRequest)
    assert msgspec.json.decode(b'{"tabName": "t"}', type=CreateConversationRequest).tab_name == "t"
