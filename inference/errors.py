"""The engine's own error codes, and how each maps onto the service's one error set.

`inference` never imports `app`, so it cannot raise the service's errors directly; it raises
`InferenceError` with an `HF_*` code and `GENERIC_CODE` tells the `hf` provider which service code to show.
A timeout is not an error here: the run ends with finish reason `timeout` and keeps its partial text.
"""

from __future__ import annotations

from typing import Any

HF_MODEL_NOT_FOUND = "HF_MODEL_NOT_FOUND"
HF_MODEL_LOAD_FAILED = "HF_MODEL_LOAD_FAILED"
HF_MEMORY_ERROR = "HF_MEMORY_ERROR"
HF_CONTEXT_LENGTH_EXCEEDED = "HF_CONTEXT_LENGTH_EXCEEDED"
HF_INFERENCE_FAILED = "HF_INFERENCE_FAILED"
HF_TOKENIZATION_ERROR = "HF_TOKENIZATION_ERROR"
HF_CANCELLED = "HF_CANCELLED"
HF_CONFIGURATION_ERROR = "HF_CONFIGURATION_ERROR"
# every model slot (HF_MAX_LOADED_MODELS) is held by a model in use: a matter of waiting, not of memory
HF_OVERLOADED = "HF_OVERLOADED"
# an image the model cannot read (not a picture, corrupt, or too many pixels)
HF_INVALID_IMAGE = "HF_INVALID_IMAGE"

GENERIC_CODE: dict[str, str] = {
    HF_MODEL_NOT_FOUND: "MODEL_NOT_FOUND",
    HF_MODEL_LOAD_FAILED: "MODEL_LOAD_FAILED",
    HF_MEMORY_ERROR: "MEMORY_EXCEEDED",
    HF_CONTEXT_LENGTH_EXCEEDED: "CONTEXT_LENGTH_EXCEEDED",
    HF_INFERENCE_FAILED: "GENERATION_FAILED",
    HF_TOKENIZATION_ERROR: "INVALID_REQUEST",
    HF_CANCELLED: "CANCELLED",
    HF_CONFIGURATION_ERROR: "INVALID_REQUEST",
    HF_OVERLOADED: "OVERLOADED",
    HF_INVALID_IMAGE: "INVALID_REQUEST",
}


class InferenceError(Exception):
    """An engine failure with a stable code and a sentence a person can act on."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        if code not in GENERIC_CODE:
            raise ValueError(f"unknown inference error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def generic_code(self) -> str:
        """The service-wide code (`MODEL_LOAD_FAILED`, ...) that clients see."""
        return GENERIC_CODE[self.code]

    def __repr__(self) -> str:
        return f"InferenceError({self.code!r}, {self.message!r}, {self.details!r})"
