"""Deleting stored image files: shared by the image store and the conversation service, which both delete rows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def remove_files(paths: Sequence[str]) -> None:
    """Unlink each file; a file that cannot be deleted is logged, never raised, so the rows still go."""
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete image file %s: %s", path, exc)
