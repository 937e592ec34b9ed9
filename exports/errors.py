"""The one exception the export command raises, with a stable code a script or a test can match on."""

from __future__ import annotations

SOURCE_NOT_FOUND = "EXPORT_SOURCE_NOT_FOUND"
NOT_A_MODEL = "EXPORT_NOT_A_MODEL"
UNSUPPORTED_ARCHITECTURE = "EXPORT_UNSUPPORTED_ARCHITECTURE"
CORRUPT_GGUF = "EXPORT_CORRUPT_GGUF"
ALIAS_EXISTS = "EXPORT_ALIAS_EXISTS"
INVALID_ALIAS = "EXPORT_INVALID_ALIAS"
INVALID_OPTION = "EXPORT_INVALID_OPTION"
HUB_UNREACHABLE = "EXPORT_HUB_UNREACHABLE"
VALIDATION_FAILED = "EXPORT_VALIDATION_FAILED"
TORCH_MISSING = "EXPORT_TORCH_MISSING"
CONVERSION_FAILED = "EXPORT_CONVERSION_FAILED"
MANIFEST_INVALID = "EXPORT_MANIFEST_INVALID"


class ExportError(Exception):
    """A refusal or failure of the export command.

    `code` is stable (scripts and tests match on it); `message` is a sentence a person can act on:
    it names what was found and what is supported or expected instead.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
