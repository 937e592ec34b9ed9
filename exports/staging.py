"""Build an export in a hidden sibling folder and move it into place in one rename.

A failed or interrupted export leaves at most a hidden `.<alias>.tmp-*` folder (removed on failure,
ignored by `models list`), never a half model under the alias. `--force` swaps the old folder out
by rename too, so serving never sees a folder that is half old, half new.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from exports import errors
from exports.errors import ExportError

ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_alias(alias: str) -> str:
    if not ALIAS.match(alias) or alias.endswith(".") or ".." in alias:
        raise ExportError(
            errors.INVALID_ALIAS,
            f"{alias!r} is not a usable alias: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters).",
        )
    return alias


def check_destination(models_dir: Path, alias: str, *, force: bool) -> Path:
    """The final folder for `alias`; refuse an existing one unless `force`."""
    destination = Path(models_dir) / check_alias(alias)
    if destination.exists() and not force:
        raise ExportError(
            errors.ALIAS_EXISTS,
            f"an export named {alias!r} already exists at {destination}. "
            "Choose another name with --name, or replace it with --force.",
        )
    return destination


@contextmanager
def staging_folder(destination: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `destination`, removed unless `publish` moved it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, destination: Path, *, force: bool) -> None:
    """Rename `staging` to `destination`; with `force`, an existing destination is moved aside first."""
    if not destination.exists():
        staging.rename(destination)
        return
    if not force:
        raise ExportError(errors.ALIAS_EXISTS, f"{destination} appeared while exporting; nothing was replaced.")
    retired = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
    destination.rename(retired)
    try:
        staging.rename(destination)
    except OSError:
        retired.rename(destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def replace_graph(graph: Path, suffix: str, save: Callable[[Path], None]) -> None:
    """Have `save` write a new graph beside `graph` (named with `suffix`), then let it and its external data
    take the graph's place; a failed save leaves the old graph as it was and nothing half-written beside it."""
    rewritten = graph.with_name(graph.name + suffix)
    for stale in graph.parent.glob(rewritten.name + "*"):  # onnx appends to an existing external data file
        stale.unlink()
    previous = list(graph.parent.glob(graph.name + "*"))  # the graph and its external data, if any
    try:
        save(rewritten)
    except BaseException:
        for partial in graph.parent.glob(rewritten.name + "*"):
            partial.unlink()
        raise
    for old in previous:
        old.unlink()
    rewritten.rename(graph)
