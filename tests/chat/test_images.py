"""Images sent with a message: validated by content, stored, served with ETag, deleted with their files.

These tests need no model: the images are stored with the user message before the model is asked.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import GET_MESSAGES, create_conversation
from tests.fixtures.server import ServerProcess, graphql, new_id
from tests.fixtures.web_client import stream_message


def tiny_png(seed: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixel = zlib.compress(bytes([0, seed % 256, 128, 255]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel) + chunk(b"IEND", b"")


JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + b"\x00" * 32 + b"\xff\xd9"
WEBP = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8 " + b"\x00" * 22


def image_files(api: httpx.Client, conversation_id: str) -> list[dict]:
    response = api.get(f"/api/images/conversation/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()["images"]


def test_upload_stores_images_and_the_client_sees_them(api: httpx.Client, server: ServerProcess) -> None:
    conversation_id = create_conversation(api)
    png = tiny_png(1)
    seen = stream_message(
        api,
        model="some-model",
        message="What is in these pictures?",
        conversation_id=conversation_id,
        files=[
            ("pasted-image-1.png", png, "image/png"),
            ("photo.jpg", JPEG, "image/jpeg"),
            ("a.webp", WEBP, "image/webp"),
        ],
    )
    assert seen.status == 200
    assert seen.images is not None
    assert seen.images["processed"] == 3
    assert [i["mimeType"] for i in seen.images["images"]] == ["image/png", "image/jpeg", "image/webp"]
    assert seen.images["warnings"]  # the model cannot see images: the client is told

    messages = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert messages[0]["text"] == "What is in these pictures?"
    assert messages[0]["hasImages"] is True
    images = messages[0]["images"]
    assert [i["filename"] for i in images] == ["pasted-image-1.png", "photo.jpg", "a.webp"]
    assert images[0]["fileSize"] == len(png)
    assert len(images[0]["contentHash"]) == 64
    assert images[0]["url"].startswith(server.url + "/api/images/img_")

    served = api.get(images[0]["url"])
    assert served.status_code == 200
    assert served.content == png
    assert served.headers["content-type"] == "image/png"
    etag = served.headers["etag"]
    assert etag == f'"{images[0]["contentHash"]}"'
    assert api.get(images[0]["url"], headers={"If-None-Match": etag}).status_code == 304
    assert api.get(images[1]["url"], headers={"If-None-Match": etag}).status_code == 200

    stored = list((server.workdir / "data" / "images").rglob("img_*"))
    assert len(stored) == 3
    assert all(p.name.startswith("img_") and p.suffix in (".png", ".jpg", ".webp") for p in stored)


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ([("fake.png", b"GIF89a" + b"\x00" * 20, "image/png")], "not a PNG, JPEG or WebP"),
        ([("liar.png", JPEG, "image/png")], "declared as image/png"),
        ([("script.png", b"<script>alert(1)</script>", "image/png")], "not a PNG, JPEG or WebP"),
        ([(f"{i}.png", tiny_png(i), "image/png") for i in range(6)], "Too many files"),
        ([("huge.png", tiny_png() + b"\x00" * (10 * 1024 * 1024), "image/png")], "File too large"),
        ([("empty.png", b"", "image/png")], "is empty"),
    ],
)
def test_bad_uploads_are_refused_before_anything_is_saved(
    api: httpx.Client, server: ServerProcess, files: list, fragment: str
) -> None:
    conversation_id = create_conversation(api)
    seen = stream_message(api, model="m", message="look", conversation_id=conversation_id, files=files)
    assert seen.status == 200
    assert seen.error is not None
    assert fragment in seen.error
    assert seen.error_payload["code"] in ("INVALID_REQUEST", "PAYLOAD_TOO_LARGE")
    assert seen.session_id is None
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []
    assert image_files(api, conversation_id) == []


def test_a_form_field_that_is_not_utf8_is_refused_not_a_server_error(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    response = api.post(
        "/api/stream-message",
        data={"model": "m", "conversationId": conversation_id},
        files=[("message", (None, b"\xff\xfe latin-1 bytes")), ("images", ("a.png", tiny_png(6), "image/png"))],
    )
    assert response.status_code == 200
    assert "event: error" in response.text
    payload = json.loads(response.text.split("data: ", 1)[1].split("\n", 1)[0])
    assert (payload["code"], payload["error"], payload["details"]) == (
        "INVALID_REQUEST",
        "Error processing multipart request",
        ["A form field is not UTF-8 text"],
    )
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []


def test_image_info_delete_and_files_follow_their_rows(api: httpx.Client, server: ServerProcess) -> None:
    conversation_id = create_conversation(api)
    stream_message(
        api, model="m", message="two", conversation_id=conversation_id,
        files=[("a.png", tiny_png(2), "image/png"), ("b.png", tiny_png(3), "image/png")],
    )  # fmt: skip
    first, second = image_files(api, conversation_id)
    info = api.get(f"/api/images/{first['id']}/info").json()
    assert info["conversationId"] == conversation_id
    assert info["mimeType"] == "image/png"
    path = next((server.workdir / "data" / "images").rglob(f"{first['id']}.png"))

    assert api.delete(f"/api/images/{first['id']}").status_code == 204
    assert not path.exists()
    assert api.get(f"/api/images/{first['id']}").status_code == 404
    assert [i["id"] for i in image_files(api, conversation_id)] == [second["id"]]

    message_id = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"][0]["id"]
    deleted = api.delete(f"/api/v1/conversations/{conversation_id}/messages", params={"fromId": message_id})
    assert deleted.json()["deletedCount"] == 1
    assert not list((server.workdir / "data" / "images").rglob(f"{second['id']}.*"))


def test_deleting_a_conversation_removes_its_image_files(api: httpx.Client, server: ServerProcess) -> None:
    conversation_id = create_conversation(api)
    stream_message(
        api, model="m", message="x", conversation_id=conversation_id, files=[("c.png", tiny_png(4), "image/png")]
    )
    (image,) = image_files(api, conversation_id)
    files = list((server.workdir / "data" / "images").rglob(f"{image['id']}.*"))
    assert len(files) == 1
    assert api.delete(f"/api/v1/conversations/{conversation_id}").status_code == 204
    assert not files[0].exists()


def test_private_conversation_images_need_the_password(api: httpx.Client) -> None:
    conversation_id = new_id()
    api.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "secret", "password": "pw"})
    refused = stream_message(
        api, model="m", message="x", conversation_id=conversation_id, files=[("p.png", tiny_png(5), "image/png")]
    )
    assert refused.error == "Password required for private conversation"
    wrong = stream_message(
        api, model="m", message="x", conversation_id=conversation_id, files=[("p.png", tiny_png(5), "image/png")],
        password="nope",
    )  # fmt: skip
    assert wrong.error == "Invalid password for private conversation"
    accepted = stream_message(
        api, model="m", message="x", conversation_id=conversation_id, files=[("p.png", tiny_png(5), "image/png")],
        password="pw",
    )  # fmt: skip
    assert accepted.images is not None
    image_id = accepted.images["images"][0]["id"]
    assert api.get(f"/api/images/{image_id}").status_code == 401
    assert api.get(f"/api/images/{image_id}", headers={"X-Conversation-Password": "no"}).status_code == 403
    assert api.get(f"/api/images/{image_id}/info").status_code == 401
    assert api.delete(f"/api/images/{image_id}").status_code == 401
    assert api.get(f"/api/images/conversation/{conversation_id}").status_code == 401
    ok = api.get(f"/api/images/{image_id}", headers={"X-Conversation-Password": "pw"})
    assert ok.status_code == 200
    assert ok.content == tiny_png(5)


def test_unknown_images_are_404(api: httpx.Client) -> None:
    for path in ("/api/images/img_0_nothing", "/api/images/x/info", "/api/images/conversation/nobody"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"


def test_expired_images_are_removed_with_their_files(tmp_path: Path) -> None:
    """The expiry sweep: rows past `expires_at` are marked deleted and their files removed."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from app.db.engine import open_database
    from app.db.migrate import migrate
    from app.db.tables import Image
    from app.services.conversations import ConversationService
    from app.services.images import ImageStore, Upload

    async def scenario() -> tuple[int, str, int]:
        await open_database(f"sqlite:///{tmp_path / 'expiry.sqlite3'}")
        await migrate()
        conversations = ConversationService(bcrypt_rounds=4)
        conversation = await conversations.create(conversation_id="exp", tab_name="t")
        message = await conversations.add_message(conversation, text="x", sender="user", has_images=True)
        store = ImageStore(tmp_path / "images", conversations, max_bytes=1 << 20, max_files=5, retention_days=30)
        (row,) = await store.store("exp", message.id, store.validate([Upload("a.png", "image/png", tiny_png())]))
        await Image.update({Image.expires_at: datetime.now(UTC) - timedelta(seconds=1)}).where(Image.id == row.id)
        removed = await store.remove_expired()
        live = await Image.count().where(Image.deleted_at.is_null())
        return removed, row.file_path, live

    removed, file_path, live = asyncio.run(scenario())
    exists = Path(file_path).exists()
    assert removed == 1
    assert not exists
    assert live == 0
