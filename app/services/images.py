"""Image rows linked to messages (uploads and serving arrive with the chat turn)."""

from __future__ import annotations

from app.db.tables import Image


async def images_by_message(message_ids: list[int]) -> dict[int, list[Image]]:
    """Live (not deleted) images of each message, oldest first, in one query."""
    if not message_ids:
        return {}
    rows = await (
        Image.objects()
        .where(Image.message_id.is_in(message_ids) & Image.deleted_at.is_null())
        .order_by(Image.created_at)
    )
    grouped: dict[int, list[Image]] = {}
    for row in rows:
        grouped.setdefault(row.message_id, []).append(row)
    return grouped


def image_url(base_url: str, image: Image) -> str:
    """An absolute URL: the web client puts it straight into <img src> from another origin."""
    return f"{base_url}/api/images/{image.id}?conversationId={image.conversation_id}"
