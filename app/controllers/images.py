"""Image routes under `/api/images`: the bytes (with ETag and caching), info, delete, per-conversation list.

A private conversation's images need its password in the `X-Conversation-Password` header, never in
the URL. Ids are the server's (`img_<ms>_<random>`); unknown ids are 404, expired images 410.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from app.db.tables import Image
from app.openapi import body, errors
from app.schemas.common import epoch_ms
from app.services.images import ImageStore

Password = Annotated[str | None, Parameter(header="X-Conversation-Password", required=False)]


class ImageInfo(msgspec.Struct, rename="camel"):
    id: str
    filename: str
    mime_type: str
    size: int
    content_hash: str
    created_at: str
    expires_at: str
    conversation_id: str
    message_id: int | None
    display_url: str

    @classmethod
    def of(cls, row: Image) -> ImageInfo:
        return cls(
            id=row.id,
            filename=row.filename,
            mime_type=row.mime_type,
            size=row.file_size,
            content_hash=row.content_hash,
            created_at=epoch_ms(row.created_at),
            expires_at=epoch_ms(row.expires_at),
            conversation_id=row.conversation_id,
            message_id=row.message_id,
            display_url=f"/api/images/{row.id}?conversationId={row.conversation_id}",
        )


class ConversationImages(msgspec.Struct, rename="camel"):
    conversation_id: str
    images: list[ImageInfo]
    total: int


class ImageController(Controller):
    path = "/api/images"
    tags = ("images",)

    @get(
        "/conversation/{conversation_id:str}",
        summary="A conversation's live images",
        responses=errors(400, 401, 403, 404, 429),
    )
    async def for_conversation(
        self, conversation_id: str, image_store: ImageStore, password: Password
    ) -> ConversationImages:
        rows = await image_store.list_for_conversation(conversation_id, password)
        return ConversationImages(
            conversation_id=conversation_id, images=[ImageInfo.of(r) for r in rows], total=len(rows)
        )

    @get(
        "/{image_id:str}",
        summary="The image's bytes (ETag = its sha256)",
        responses={
            200: body(bytes, "The image, in its own type (image/png, image/jpeg, ...)", "image/*"),
            304: ResponseSpec(None, description="Not modified (If-None-Match matched the ETag)"),
            **errors(400, 401, 403, 404, 410, 429),
        },
    )
    async def serve(
        self, image_id: str, request: Request, image_store: ImageStore, password: Password
    ) -> Response[bytes]:
        row, path = await image_store.open(image_id, password)
        etag = f'"{row.content_hash}"'
        headers = {
            "ETag": etag,
            "Cache-Control": "private, max-age=3600",
            "Last-Modified": row.created_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
        data = await anyio.Path(path).read_bytes()
        return Response(data, media_type=row.mime_type, headers=headers)

    @get("/{image_id:str}/info", summary="The image's metadata", responses=errors(400, 401, 403, 404, 410, 429))
    async def info(self, image_id: str, image_store: ImageStore, password: Password) -> ImageInfo:
        row, _ = await image_store.open(image_id, password)
        return ImageInfo.of(row)

    @delete("/{image_id:str}", summary="Delete the image and its file", responses=errors(400, 401, 403, 404, 410, 429))
    async def remove(self, image_id: str, image_store: ImageStore, password: Password) -> None:
        await image_store.delete(image_id, password)
