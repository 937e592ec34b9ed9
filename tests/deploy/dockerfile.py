"""Reading docs/deploy/Dockerfile: its stages and their instructions, continuation lines joined.

Enough of the format for the tests to run a stage's commands outside a container: one instruction
per logical line, `#` comments, backslash continuations, `FROM image AS name` stages.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docs" / "deploy" / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [argument for name, argument in self.instructions if name == keyword]

    def env(self) -> dict[str, str]:
        """The stage's `ENV key=value ...` settings (values unquoted, `$PATH`-style references left as they are)."""
        values: dict[str, str] = {}
        for argument in self.arguments("ENV"):
            for item in shlex.split(argument):
                key, _, value = item.partition("=")
                values[key] = value
        return values

    def copied_paths(self) -> list[str]:
        """Sources of the stage's `COPY` from the build context (not `--from` another stage)."""
        paths: list[str] = []
        for argument in self.arguments("COPY"):
            parts = shlex.split(argument)
            if any(part.startswith("--from") for part in parts):
                continue
            paths += [part.rstrip("/") for part in parts[:-1] if not part.startswith("--")]
        return paths

    def run_commands(self) -> list[str]:
        """Each `RUN` as the shell command it runs (BuildKit `--mount=...` options dropped)."""
        return [re.sub(r"^(--\S+\s+)+", "", argument) for argument in self.arguments("RUN")]


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending.strip())
    return lines


def parse(path: Path = DOCKERFILE) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines(path.read_text()):
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = argument.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append((keyword, argument.strip()))
    return stages
