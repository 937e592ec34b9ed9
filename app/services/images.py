"""Images attached to messages: validation by content, storage under server-chosen names, serving, expiry.

The real type comes from the file's first bytes (PNG, JPEG, WebP); a declared type that disagrees is
refused. Files live under `<data dir>/images/YYYY/MM/<id>.<ext>`, and every path that deletes rows
(image, message, conversation, expiry) also deletes the files, which the old service never did.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from app.db.tables import Image, Message
from app.db.text import equals_text
from app.errors import ErrorCode, ServiceError
from app.image_types import sniff_image_type
from app.services.image_files import remove_files

if TYPE_CHECKING:
    from app.services.conversations import ConversationService

log = logging.getLogger(__name__)

SIGNATURES: tuple[tuple[str, str], ...] = (("image/png", "png"), ("image/jpeg", "jpg"), ("image/webp", "webp"))
DECLARED_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
EXPIRY_SWEEP_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ValidatedImage:
    upload: Upload
    mime_type: str
    extension: str
    sha256: str


def encoded_upload(value: str, index: int) -> Upload:
    """An image sent as base64 or a `data:` URL in JSON or GraphQL, as the upload the multipart form gives;
    the same validation (count, size, real type) follows in `ImageStore.validate`."""
    name = f"image-{index + 1}"
    declared = ""
    payload = value.strip()
    if payload.startswith("data:"):
        header, comma, payload = payload.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{name} is not a base64 data: URL",
                details={"field": "images", "index": index},
            )
        declared = header[len("data:") : -len(";base64")]
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"{name} is not valid base64 image data",
            details={"field": "images", "index": index},
        ) from None
    return Upload(filename=name, content_type=declared, data=data)


def _new_image_id() -> str:
    suffix = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(9))
    return f"img_{int(time.time() * 1000)}_{suffix}"


def _display_name(filename: str, extension: str) -> str:
    name = PurePath(filename.replace("\\", "/")).name.strip() or f"image.{extension}"
    return "".join(ch for ch in name if ch.isprintable())[:255]


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


class ImageStore:
    def __init__(
        self,
        root: Path,
        conversations: ConversationService,
        *,
        max_bytes: int,
        max_files: int,
        retention_days: int,
    ) -> None:
        self.root = root
        self.conversations = conversations
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.retention = timedelta(days=retention_days)

    # -- upload ---------------------------------------------------------------------------------------

    def validate(self, uploads: Sequence[Upload]) -> list[ValidatedImage]:
        """Check count, size and real type of every upload before anything is saved."""
        if len(uploads) > self.max_files:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"Too many files: at most {self.max_files} images per message",
                details={"maxFiles": self.max_files, "received": len(uploads)},
            )
        validated: list[ValidatedImage] = []
        for upload in uploads:
            name = upload.filename or "image"
            if not upload.data:
                raise ServiceError(ErrorCode.INVALID_REQUEST, f"{name} is empty", details={"file": name})
            if len(upload.data) > self.max_bytes:
                raise ServiceError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"File too large: {name} is over {self.max_bytes // (1024 * 1024)} MB",
                    details={"file": name, "maxBytes": self.max_bytes},
                )
            actual = sniff_image_type(upload.data)
            if actual is None:
                raise ServiceError(
                    ErrorCode.INVALID_REQUEST,
                    f"Invalid file type: {name} is not a PNG, JPEG or WebP image",
                    details={"file": name, "declaredType": upload.content_type},
                )
            declared = DECLARED_ALIASES.get(upload.content_type.lower(), upload.content_type.lower())
            if declared and declared != "application/octet-stream" and declared != actual:
                raise ServiceError(
                    ErrorCode.INVALID_REQUEST,
                    f"Invalid file type: {name} is declared as {upload.content_type} but its content is {actual}",
                    details={"file": name, "declaredType": upload.content_type, "actualType": actual},
                )
            extension = dict(SIGNATURES)[actual]
            validated.append(ValidatedImage(upload, actual, extension, hashlib.sha256(upload.data).hexdigest()))
        return validated

    async def store(self, conversation_id: str, message_id: int, images: Sequence[ValidatedImage]) -> list[Image]:
        """Write the files, then their rows; a failure removes the files it wrote."""
        now = datetime.now(UTC)
        folder = self.root / f"{now:%Y}" / f"{now:%m}"
        rows: list[Image] = []
        written: list[str] = []
        try:
            for image in images:
                image_id = _new_image_id()
                path = folder / f"{image_id}.{image.extension}"
                await asyncio.to_thread(self._write, path, image.upload.data)
                written.append(str(path))
                rows.append(
                    Image(
                        id=image_id,
                        conversation_id=conversation_id,
                        message_id=message_id,
                        filename=_display_name(image.upload.filename, image.extension),
                        file_path=str(path),
                        file_size=len(image.upload.data),
                        mime_type=image.mime_type,
                        content_hash=image.sha256,
                        created_at=now,
                        expires_at=now + self.retention,
                    )
                )
            if rows:
                await Image.insert(*rows)
        except Exception:
            remove_files(written)
            raise
        return rows

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".part")
        temporary.write_bytes(data)
        temporary.replace(path)

    @staticmethod
    def as_base64(images: Sequence[ValidatedImage]) -> list[str]:
        return [base64.b64encode(image.upload.data).decode() for image in images]

    async def history_base64(self, messages: Sequence[Message]) -> dict[int, list[str]]:
        """Earlier messages' live images as base64, by message id, for a vision model; a file that is gone
        or expired is left out (its message is still sent as text)."""
        rows = await images_by_message([m.id for m in messages if m.has_images])
        now = datetime.now(UTC)

        def read() -> dict[int, list[str]]:
            loaded: dict[int, list[str]] = {}
            for message_id, images in rows.items():
                for row in images:
                    path = Path(row.file_path)
                    if row.expires_at < now or not path.is_file():
                        continue
                    loaded.setdefault(message_id, []).append(base64.b64encode(path.read_bytes()).decode())
            return loaded

        return await asyncio.to_thread(read)

    @staticmethod
    def describe(row: Image) -> dict[str, Any]:
        """The `images` SSE event's entry (the old contract's shape)."""
        return {
            "id": row.id,
            "filename": row.filename,
            "url": f"/api/images/{row.id}?conversationId={row.conversation_id}",
            "size": row.file_size,
            "mimeType": row.mime_type,
        }

    # -- access ---------------------------------------------------------------------------------------

    async def open(self, image_id: str, password: str | None) -> tuple[Image, Path]:
        """The image row and file, after the existence, expiry and private-conversation checks."""
        row = await Image.objects().where(equals_text(Image.id, image_id) & Image.deleted_at.is_null()).first()
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "Image not found", details={"id": image_id})
        await self.conversations.authorize(row.conversation_id, password)
        if row.expires_at < datetime.now(UTC):
            raise ServiceError(ErrorCode.NOT_FOUND, "Image has expired", status=410, details={"id": image_id})
        path = Path(row.file_path)
        if not await asyncio.to_thread(path.is_file):
            raise ServiceError(ErrorCode.NOT_FOUND, "Image file not found", details={"id": image_id})
        return row, path

    async def list_for_conversation(self, conversation_id: str, password: str | None) -> list[Image]:
        conversation = await self.conversations.authorize(conversation_id, password)
        return await (
            Image.objects()
            .where(
                (Image.conversation_id == conversation.id)
                & Image.deleted_at.is_null()
                & (Image.expires_at > datetime.now(UTC))
            )
            .order_by(Image.created_at)
        )

    async def delete(self, image_id: str, password: str | None) -> None:
        """Delete the row and the file; the message's `has_images` follows its remaining images."""
        row, _ = await self.open(image_id, password)
        async with Image._meta.db.transaction():
            await Image.delete().where(Image.id == row.id)
            if row.message_id is not None:
                remaining = await Image.count().where((Image.message_id == row.message_id) & Image.deleted_at.is_null())
                if not remaining:
                    await Message.update({Message.has_images: False}).where(Message.id == row.message_id)
        remove_files([row.file_path])

    async def remove_expired(self) -> int:
        """Delete the files of expired images and mark their rows deleted."""
        now = datetime.now(UTC)
        rows = await Image.select(Image.id, Image.file_path).where(
            (Image.expires_at < now) & Image.deleted_at.is_null()
        )
        if not rows:
            return 0
        await Image.update({Image.deleted_at: now}).where(Image.id.is_in([r["id"] for r in rows]))
        remove_files([r["file_path"] for r in rows])
        return len(rows)

    async def run_expiry(self) -> None:
        """Background task: the expiry sweep, hourly (the first one at start-up)."""
        while True:
            try:
                removed = await self.remove_expired()
                if removed:
                    log.info("removed %d expired images", removed)
            except Exception:
                log.exception("image expiry sweep failed; retrying later")
            await asyncio.sleep(EXPIRY_SWEEP_INTERVAL_S)
