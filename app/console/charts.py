"""Usage charts drawn on the server as SVG: grouped bars, one group per hour or day, one bar per model.

Drawing on the server keeps the console free of a chart library; the SVG scales with the page and takes
its colours from CSS variables, so it follows the light or dark theme.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from app.services.usage import Period, UsageRow

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 28
SERIES_COLOURS = 8  # CSS classes s0..s7


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    value: Callable[[Sequence[UsageRow]], float | None]


def _sum(field: str) -> Callable[[Sequence[UsageRow]], float | None]:
    return lambda rows: float(sum(getattr(r, field) for r in rows)) if rows else None


def _ttft(rows: Sequence[UsageRow]) -> float | None:
    requests = sum(r.requests for r in rows)
    return sum(r.total_time_to_first_token_ms for r in rows) / requests if requests else None


def _tokens_per_second(rows: Sequence[UsageRow]) -> float | None:
    seconds = sum(r.total_duration_ms for r in rows) / 1000
    return sum(r.completion_tokens for r in rows) / seconds if seconds > 0 else None


METRICS = (
    Metric("requests", "Requests", "", _sum("requests")),
    Metric("errors", "Errors", "", _sum("errors")),
    Metric("prompt_tokens", "Prompt tokens", "", _sum("prompt_tokens")),
    Metric("completion_tokens", "Completion tokens", "", _sum("completion_tokens")),
    Metric("ttft", "Time to first token", "ms", _ttft),
    Metric("tokens_per_second", "Tokens per second", "tok/s", _tokens_per_second),
)


@dataclass(frozen=True)
class UsageTable:
    """The rows of a report arranged as buckets (x) by models (series)."""

    buckets: list[datetime]
    models: list[str]
    cells: dict[tuple[datetime, str], list[UsageRow]]

    @classmethod
    def of(cls, rows: Sequence[UsageRow], axis: Sequence[datetime] = ()) -> UsageTable:
        """`axis`: the periods to show even where no row has data (the window's hours or days)."""
        cells: dict[tuple[datetime, str], list[UsageRow]] = {}
        for row in rows:
            cells.setdefault((row.period_start, row.model), []).append(row)
        return cls(
            buckets=sorted({r.period_start for r in rows} | set(axis)),
            models=sorted({r.model for r in rows}),
            cells=cells,
        )

    def value(self, metric: Metric, bucket: datetime, model: str) -> float | None:
        rows = self.cells.get((bucket, model))
        return metric.value(rows) if rows else None


def bucket_label(moment: datetime, period: Period) -> str:
    return moment.strftime("%m-%d %H:00" if period == "hour" else "%Y-%m-%d")


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def bar_chart(table: UsageTable, metric: Metric, period: Period) -> str:
    """One metric as an SVG of grouped bars (an accessible title, each bar's value in its `data-value`)."""
    values = [table.value(metric, b, m) for b in table.buckets for m in table.models]
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f"<svg class='chart' viewBox='0 0 {WIDTH} {HEIGHT}' role='img' data-metric='{metric.key}' "
        f"aria-label='{escape(metric.title)} per model by {period}'>",
        f"<line class='axis' x1='{LEFT}' y1='{TOP + plot_h}' x2='{WIDTH - RIGHT}' y2='{TOP + plot_h}'/>",
    ]
    for fraction in (0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f"<line class='grid' x1='{LEFT}' y1='{y:.1f}' x2='{WIDTH - RIGHT}' y2='{y:.1f}'/>")
        parts.append(
            f"<text class='tick' x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{_number(top * fraction)}</text>"
        )
    if table.buckets:
        group_w = plot_w / len(table.buckets)
        bar_w = max(1.0, min(40.0, group_w * 0.8 / max(1, len(table.models))))
        label_every = max(1, -(-len(table.buckets) // 6))
        for i, bucket in enumerate(table.buckets):
            group_x = LEFT + i * group_w + (group_w - bar_w * len(table.models)) / 2
            for j, model in enumerate(table.models):
                value = table.value(metric, bucket, model)
                if value is None:
                    continue
                h = plot_h * value / top
                label = f"{model}, {bucket_label(bucket, period)}: {_number(value)} {metric.unit}".strip()
                parts.append(
                    f"<rect class='bar s{j % SERIES_COLOURS}' x='{group_x + j * bar_w:.1f}' y='{TOP + plot_h - h:.1f}' "
                    f"width='{bar_w:.1f}' height='{h:.1f}' data-value='{value:g}'><title>{escape(label)}</title></rect>"
                )
            if i % label_every == 0:
                parts.append(
                    f"<text class='tick' x='{LEFT + (i + 0.5) * group_w:.1f}' y='{HEIGHT - 8}' text-anchor='middle'>"
                    f"{escape(bucket_label(bucket, period))}</text>"
                )
    else:
        parts.append(f"<text class='empty' x='{WIDTH / 2}' y='{HEIGHT / 2}' text-anchor='middle'>No usage yet</text>")
    parts.append("</svg>")
    return "".join(parts)
