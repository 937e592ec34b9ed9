"""What kind of image a file is, from its first bytes: the service's one check, for uploads and for providers."""

from __future__ import annotations


def sniff_image_type(data: bytes) -> str | None:
    """The mime type from the magic bytes, or None when the bytes are not PNG, JPEG or WebP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
