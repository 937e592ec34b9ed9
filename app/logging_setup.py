"""Process-wide logging: one format, one level from the settings, quiet third-party chatter."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # Piccolo announces the SQLite version on every connection.
    logging.getLogger("piccolo").setLevel(logging.WARNING)
