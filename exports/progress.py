"""How an export reports its long steps, without knowing whether a terminal, a log or a test listens."""

from __future__ import annotations

import logging
from typing import Protocol


class ExportProgress(Protocol):
    """Receives the steps of one export in order: `start`, any number of `advance`, then `finish`."""

    def start(self, step: str, description: str, total: int | None = None) -> None:
        """A step begins; `total` is the number of units `advance` will count, None when unknown."""

    def advance(self, step: str, amount: int = 1) -> None:
        """Some units of the current step are done."""

    def finish(self, step: str, detail: str = "") -> None:
        """The step ended; `detail` is a short result a person may want to see (a size, a figure)."""


class NullProgress:
    """The listener used when nobody listens."""

    def start(self, step: str, description: str, total: int | None = None) -> None:
        return None

    def advance(self, step: str, amount: int = 1) -> None:
        return None

    def finish(self, step: str, detail: str = "") -> None:
        return None


class LoggingProgress:
    """Step lines through `logging`: for `serve`'s first-run export, where log lines are the terminal."""

    def __init__(self, logger_name: str = "exports") -> None:
        self._log = logging.getLogger(logger_name)

    def start(self, step: str, description: str, total: int | None = None) -> None:
        self._log.info("export: %s ...", description)

    def advance(self, step: str, amount: int = 1) -> None:
        return None

    def finish(self, step: str, detail: str = "") -> None:
        self._log.info("export: %s done%s", step, f" ({detail})" if detail else "")
