"""The README's configuration table, written from the settings rows (`beth-chat config table`).

The README keeps the table between two marker comments; `check_readme` says whether it is current, so a new key or a
changed default cannot leave the documentation behind.
"""

from __future__ import annotations

from pathlib import Path

from app.config.settings import KEYS, KeyInfo
from app.config.toml import plain

START = "<!-- configuration table: written by `beth-chat config table`, do not edit by hand -->"
END = "<!-- end of the configuration table -->"


def _default(row: KeyInfo) -> str:
    if row.shown is not None:
        return row.shown if " " in row.shown or "(" in row.shown else f"`{row.shown}`"
    value = plain(row.default)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ("", [], None):
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    return f"`{value}`"


def markdown_table() -> str:
    """One line per key: its environment names, default, when a change applies, and what it does."""
    lines = ["| Environment | Default | Applies | Meaning |", "|---|---|---|---|"]
    for row in KEYS.values():
        names = ", ".join(f"`{name}`" for name in row.env)
        applies = "at restart" if row.restart else "live"
        lines.append(f"| {names} | {_default(row)} | {applies} | {row.doc} |")
    return "\n".join(lines) + "\n"


def readme_section() -> str:
    return f"{START}\n{markdown_table()}{END}"


def current_section(readme: str) -> str | None:
    """The marked table in a README text, markers included; None when the markers are missing."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[start : end + len(END)]


def write_readme(path: Path) -> bool:
    """Replace the marked table in `path` with the current one; returns whether anything changed."""
    text = path.read_text(encoding="utf-8")
    section = current_section(text)
    if section is None:
        raise ValueError(f"{path} has no configuration table markers ({START})")
    updated = text.replace(section, readme_section())
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text
