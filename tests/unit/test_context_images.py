"""Earlier turns' images in a vision model's context: kept newest first while they fit, the oldest dropped
first, never sent to a model that cannot see."""

from __future__ import annotations

from app.db.tables import Message
from app.providers.types import ChatMessage
from app.services.context import as_history, build_context


def _history() -> list[Message]:
    turns = [(1, "user", "first"), (2, "llm", "a"), (3, "user", "second"), (4, "llm", "b")]
    return [Message(id=i, text=text, sender=sender, has_images=sender == "user") for i, sender, text in turns]


IMAGES = {1: ["old"], 3: ["new"]}


def _images(room_for_images: int, image_tokens: int | None, current_images: int = 0) -> list[list[str]]:
    """The images each message is sent with, in a context whose texts leave `room_for_images` tokens."""
    count = len  # one token a character, plus 8 per message
    texts = len("sys") + sum(len(m.text) for m in _history()) + len("now") + 8 * 6
    context = build_context(
        system_prompt="sys",
        history=as_history(_history(), IMAGES),
        current=ChatMessage(role="user", content="now", images=["x"] * current_images),
        context_length=texts + room_for_images + 10,
        max_new_tokens=10,
        count_text=count,
        image_tokens=image_tokens,
    )
    assert [m.content for m in context.messages] == ["sys", "first", "a", "second", "b", "now"]
    return [m.images for m in context.messages]


def test_every_earlier_image_goes_when_they_all_fit() -> None:
    assert _images(200, 100) == [[], ["old"], [], ["new"], [], []]


def test_the_oldest_image_is_dropped_first() -> None:
    assert _images(199, 100) == [[], [], [], ["new"], [], []]
    assert _images(99, 100) == [[], [], [], [], [], []]


def test_the_current_images_are_counted_first() -> None:
    assert _images(200, 100, current_images=1) == [[], [], [], ["new"], [], ["x"]]


def test_a_model_that_cannot_see_gets_no_earlier_images() -> None:
    assert _images(10_000, None) == [[], [], [], [], [], []]
