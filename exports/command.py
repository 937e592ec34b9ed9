"""The terminal side of `beth-chat export` and `beth-chat models list`: progress, summary, exit codes.

app/cli.py parses the options and calls these; everything a person sees on the terminal is here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from exports.errors import ExportError
from exports.loading import quiet_libraries
from exports.manifest import Manifest, scan_manifests

EXIT_OK = 0
EXIT_REFUSED = 2


class RichProgress:
    """One line per step: a spinner while it runs (a bar when it counts), then a check mark and its result."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._descriptions: dict[str, str] = {}
        self._started: dict[str, float] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def start(self, step: str, description: str, total: int | None = None) -> None:
        self._descriptions[step] = description
        self._started[step] = time.monotonic()
        self._tasks[step] = self._progress.add_task(description, total=total)

    def advance(self, step: str, amount: int = 1) -> None:
        if step in self._tasks:
            self._progress.advance(self._tasks[step], amount)

    def finish(self, step: str, detail: str = "") -> None:
        task = self._tasks.pop(step, None)
        if task is not None:
            self._progress.remove_task(task)
        elapsed = f" [dim]({time.monotonic() - self._started.pop(step, time.monotonic()):.1f}s)[/dim]"
        suffix = f": {detail}" if detail else ""
        self._console.print(f"[green]✓[/green] {self._descriptions.get(step, step)}{suffix}{elapsed}")


def run_export(
    source: str,
    *,
    models_dir: Path,
    alias: str | None,
    quantize: str,
    force: bool,
    dtype: str = "fp32",
    max_logit_diff: float | None,
    min_agreement: float | None,
    console: Console | None = None,
) -> int:
    """Export with progress on the terminal; 0 and a summary table on success, 2 and the reason on refusal."""
    from exports.export import export_model

    console = console or Console(stderr=True)
    quiet_libraries()
    try:
        with RichProgress(console) as progress:
            manifest = export_model(
                source,
                models_dir=Path(models_dir),
                alias=alias,
                quantize=quantize,
                dtype=dtype,
                force=force,
                max_logit_diff=max_logit_diff,
                min_agreement=min_agreement,
                progress=progress,
            )
    except ExportError as exc:
        console.print(f"[bold red]export refused[/bold red] [red]{exc.code}[/red]: {exc.message}")
        console.print("Nothing was written.")
        return EXIT_REFUSED
    console.print(summary_table(manifest, Path(models_dir) / manifest.alias))
    return EXIT_OK


def summary_table(manifest: Manifest, folder: Path) -> Table:
    table = Table(title=f"Exported {manifest.alias}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    validation = manifest.validation
    rows = [
        ("folder", str(folder)),
        ("source", f"{manifest.source.kind}: {manifest.source.value}"),
        ("architecture", f"{manifest.architecture} ({manifest.parameter_count / 1e6:.1f}M parameters)"),
        ("context length", str(manifest.context_length)),
        ("quantization", manifest.quantization),
        ("precision", f"{manifest.dtype} (cache {manifest.kv_cache_dtype}, logits {manifest.logits_dtype})"),
        ("size", _megabytes(manifest.size_bytes)),
        ("capabilities", _capabilities(manifest)),
        ("max |Δlogit| vs PyTorch", f"{validation.max_abs_logit_diff:.2e} (≤ {validation.max_logit_diff_threshold:g})"),
    ]
    if validation.float16_max_abs_logit_diff is not None:
        bound = validation.float16_max_logit_diff_threshold or 0.0
        rows.append(("float16 max |Δlogit|", f"{validation.float16_max_abs_logit_diff:.2e} (≤ {bound:g})"))
    if _agreement_checked(manifest) and validation.top1_agreement is not None:
        threshold = validation.min_agreement_threshold or 0.0
        rows.append(("top-1 agreement", f"{validation.top1_agreement:.1%} (≥ {threshold:.0%})"))
    rows.append(("took", f"{manifest.export_seconds:.0f}s"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def run_models_list(models_dir: Path, *, as_json: bool = False, console: Console | None = None) -> int:
    """Print the exports under `models_dir` as a table (or JSON); broken folders are named, not hidden."""
    manifests, broken = scan_manifests(Path(models_dir))
    if as_json:
        payload = {
            "models": [msgspec.to_builtins(manifest) for manifest in manifests],
            "broken": [{"path": str(item.path), "reason": item.reason} for item in broken],
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    console = console or Console()
    if not manifests and not broken:
        console.print(f"No exported models in {models_dir}. Create one with `beth-chat export default`.")
        return EXIT_OK
    table = Table(
        title=f"Models in {models_dir}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    # an alias is what the operator types next: never shortened; a narrow terminal wraps the other columns
    table.add_column(
        "alias", no_wrap=True, min_width=max(len(manifest.alias) for manifest in manifests) if manifests else None
    )
    for column in ("size", "quantization", "dtype", "capabilities", "validation", "created"):
        table.add_column(column, overflow="fold")
    for manifest in manifests:
        table.add_row(
            manifest.alias,
            _megabytes(manifest.size_bytes),
            manifest.quantization,
            manifest.dtype,
            _capabilities(manifest),
            _validation_cell(manifest),
            manifest.created_at[:16].replace("T", " "),
        )
    console.print(table)
    for item in broken:
        console.print(f"[yellow]not an export:[/yellow] {item.path}: {item.reason}")
    return EXIT_OK


def _validation_cell(manifest: Manifest) -> str:
    validation = manifest.validation
    cell = f"Δlogit {validation.float16_max_abs_logit_diff or validation.max_abs_logit_diff:.1e}"
    if _agreement_checked(manifest) and validation.top1_agreement is not None:
        cell += f", top-1 {validation.top1_agreement:.0%}"
    return cell


def _agreement_checked(manifest: Manifest) -> bool:
    return manifest.quantization != "none" or manifest.dtype == "fp16"


def _capabilities(manifest: Manifest) -> str:
    names = [name for name in ("text", "vision") if getattr(manifest.capabilities, name)]
    return ", ".join(names)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
