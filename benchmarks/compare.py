"""`python -m benchmarks.compare` (`make benchmark`): the service's hf engine as a client sees it, with targets.

Starts `beth-chat serve` on the default model's export (greedy, a fixed reply limit, Ollama off) and measures
over HTTP, through the REST typed stream: single-stream decode and time to first token; the first turn's time
to first token when only the system prompt is cached; aggregate tokens/s of 1, 2, 4 and 8 concurrent streams;
time to first token per turn over a 10-turn conversation. llama.cpp runs beside it on the same GGUF file where
llama-cpp-python is installed. Runners take turns within every round, so load from other processes hits all
of them alike; each figure is the median over the rounds. Ends with the targets, PASS or MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import llama, workload
from benchmarks.models import VARIANTS, export_folder, gguf_file, models_dir
from benchmarks.service import ServiceClient, running_service
from benchmarks.workload import CONCURRENCY, TURNS, ChatRunner, Samples, median

# The single-sequence engine's single-stream decode on the 2-core reference machine: "no slower than today".
DECODE_BASELINE_TPS = {"fp32": 66.0, "int4": 108.0}


@dataclass
class Target:
    text: str
    value: float | None
    limit: float
    at_least: bool  # True: value >= limit passes; False: value <= limit passes
    unit: str = "x"

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        passed = self.value >= self.limit if self.at_least else self.value <= self.limit
        return "PASS" if passed else "MISS"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=(__doc__ or "").split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--rounds", type=int, default=2, help="measuring rounds; medians are reported (default 2)")
    parser.add_argument(
        "--cached-turns", type=int, default=3, help="first turns per round for the cached-system-prompt figure"
    )
    parser.add_argument("--max-tokens", type=int, default=128, help="reply limit of every turn (default 128)")
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        help="every turn's repetition penalty (default: the service's own; 1 turns it off)",
    )
    parser.add_argument("--int4", action="store_true", help="also measure the int4 export (exported on first use)")
    parser.add_argument(
        "--threads", type=int, default=0, help="HF_NUM_THREADS of the service and llama.cpp's threads (0: all cores)"
    )
    parser.add_argument("--no-llama", action="store_true", help="skip llama.cpp even where it is installed")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the service (repeatable), e.g. HF_EXECUTION_PROVIDER=cuda",
    )
    parser.add_argument("--json", type=Path, help="also write every sample and figure to this file")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    if args.rounds < 1 or args.max_tokens < 2 or args.cached_turns < 0:
        parser.error("--rounds must be at least 1, --max-tokens at least 2, --cached-turns at least 0")
    return args


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _measure(runners: list[ChatRunner], args: argparse.Namespace) -> dict[str, Samples]:
    samples = {runner.name: Samples() for runner in runners}
    asks = {runner.name: workload.questions() for runner in runners}
    for runner in runners:  # warm-up: loads the model and lets it see the system prompt once
        _progress(f"warming up {runner.name}")
        warm = await runner.turn(await runner.new_conversation(), "Hello! Who are you?")
        if warm.error:
            raise SystemExit(f"{runner.name} cannot answer: {warm.error}")
    for number in range(1, args.rounds + 1):
        for runner in runners:
            ask, into = asks[runner.name], samples[runner.name]
            _progress(f"round {number}/{args.rounds}, {runner.name}: single stream")
            await workload.single_stream(runner, ask, into)
            await workload.cached_first_turns(runner, ask, into, args.cached_turns)
            if runner.concurrent:
                _progress(f"round {number}/{args.rounds}, {runner.name}: {', '.join(map(str, CONCURRENCY))} streams")
                await workload.concurrent_streams(runner, ask, into)
            _progress(f"round {number}/{args.rounds}, {runner.name}: a {TURNS}-turn conversation")
            await workload.conversation(runner, ask, into)
    return samples


def _figures(samples: Samples) -> dict[str, float | None]:
    figures: dict[str, float | None] = {
        "decode_tps": median(samples.decode_tps),
        "ttft_ms": _ms(median(samples.ttft_s)),
        "cached_ttft_ms": _ms(median(samples.cached_ttft_s)),
        "turn1_ttft_ms": _ms(median(samples.turn_ttft_s.get(1, []))),
        f"turn{TURNS}_ttft_ms": _ms(median(samples.turn_ttft_s.get(TURNS, []))),
        "turn_ratio": median(samples.turn_ratio),
    }
    for streams in CONCURRENCY:
        figures[f"aggregate{streams}_tps"] = median(samples.aggregate_tps.get(streams, []))
        if streams > 1:
            figures[f"scaling{streams}"] = median(samples.scaling.get(streams, []))
    return figures


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _cell(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _table(figures: dict[str, dict[str, float | None]]) -> list[str]:
    names = list(figures)
    rows: list[tuple[str, list[str]]] = [
        ("single-stream decode, tok/s", [_cell(f["decode_tps"]) for f in figures.values()]),
        ("time to first token, first turn, ms", [_cell(f["ttft_ms"], 0) for f in figures.values()]),
        ("  the same, stopped at its first token, ms", [_cell(f["cached_ttft_ms"], 0) for f in figures.values()]),
    ]
    for streams in CONCURRENCY:
        cells = []
        for f in figures.values():
            scaling = f.get(f"scaling{streams}")
            ratio = "" if scaling is None else f" ({scaling:.2f}x)"
            cells.append(_cell(f[f"aggregate{streams}_tps"]) + ratio)
        label = "aggregate tok/s, 1 stream" if streams == 1 else f"aggregate tok/s, {streams} streams (x one's)"
        rows.append((label, cells))
    rows += [
        ("time to first token, turn 1, ms", [_cell(f["turn1_ttft_ms"], 0) for f in figures.values()]),
        (f"time to first token, turn {TURNS}, ms", [_cell(f[f"turn{TURNS}_ttft_ms"], 0) for f in figures.values()]),
        (f"turn {TURNS} / turn 1", [_cell(f["turn_ratio"], 2, "x") for f in figures.values()]),
    ]
    width = max(16, *(len(name) + 2 for name in names))
    lines = [f"{'figure':<46}" + "".join(f"{name:>{width}}" for name in names)]
    lines += [f"{label:<46}" + "".join(f"{cell:>{width}}" for cell in cells) for label, cells in rows]
    return lines


def _turn_table(samples: dict[str, Samples]) -> list[str]:
    names = list(samples)
    first = samples[names[0]]
    width = max(16, *(len(name) + 5 for name in names))
    lines = [f"{'turn':>6}{'prompt tokens':>16}" + "".join(f"{f'{name} ms':>{width}}" for name in names)]
    for turn in range(1, TURNS + 1):
        prompt = median(first.turn_prompt_tokens.get(turn, []))
        cells = "".join(f"{_cell(_ms(median(s.turn_ttft_s.get(turn, []))), 0):>{width}}" for s in samples.values())
        lines.append(f"{turn:>6}{_cell(prompt, 0):>16}{cells}")
    return lines


def _ratios(figures: dict[str, dict[str, float | None]], reference: str) -> list[str]:
    """Each engine against llama.cpp: decode (engine / llama.cpp) and time to first token (llama.cpp / engine)."""
    theirs = figures[reference]
    lines = []
    for name, ours in figures.items():
        if name == reference:
            continue
        parts = [f"decode x{_quotient(ours['decode_tps'], theirs['decode_tps'])}"]
        for key, label in (
            ("ttft_ms", "TTFT"),
            ("cached_ttft_ms", "cached TTFT"),
            (f"turn{TURNS}_ttft_ms", f"turn {TURNS} TTFT"),
        ):
            parts.append(f"{label} x{_quotient(theirs[key], ours[key])}")
        lines.append(f"  {name} vs {reference}: " + "  ".join(parts))
    return lines


def _quotient(numerator: float | None, denominator: float | None) -> str:
    return "-" if numerator is None or not denominator else f"{numerator / denominator:.2f}"


def _targets(figures: dict[str, dict[str, float | None]], variants: dict[str, str]) -> list[Target]:
    default = figures[variants["fp32"]]
    targets = [
        Target("4 streams' aggregate tok/s >= 2.5x one stream's", default["scaling4"], 2.5, True),
        Target("8 streams' aggregate tok/s >= 3x one stream's", default["scaling8"], 3.0, True),
        Target(f"turn {TURNS}'s time to first token <= 1.3x turn 1's", default["turn_ratio"], 1.3, False),
        Target(
            "first turn's time to first token, system prompt cached, <= 60 ms",
            default["cached_ttft_ms"],
            60,
            False,
            " ms",
        ),
    ]
    for variant, name in variants.items():
        baseline = DECODE_BASELINE_TPS[variant]
        text = f"{variant} single-stream decode >= {baseline:.0f} tok/s (single-sequence engine)"
        targets.append(Target(text, figures[name]["decode_tps"], baseline, True, " tok/s"))
    if "int4" in variants and "llama.cpp" in figures:
        ours, theirs = figures[variants["int4"]]["decode_tps"], figures["llama.cpp"]["decode_tps"]
        ratio = ours / theirs if ours is not None and theirs else None
        targets.append(Target("int4 single-stream decode >= 1.2x llama.cpp's", ratio, 1.2, True))
    return targets


def _machine(args: argparse.Namespace) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = args.threads or os.cpu_count()
    extra = f", service environment {' '.join(args.server_env)}" if args.server_env else ""
    return f"{cpu}, {os.cpu_count()} cores, {threads} threads{extra}"


def main(argv: Sequence[str] | None = None) -> None:
    args = _arguments(argv)
    variants = ["fp32", "int4"] if args.int4 else ["fp32"]
    root = models_dir()
    for variant in variants:
        export_folder(variant, root)
    names = {variant: f"hf/{VARIANTS[variant][0]}" for variant in variants}
    env = dict(item.split("=", 1) for item in args.server_env)
    if args.threads:
        env.setdefault("HF_NUM_THREADS", str(args.threads))
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="beth-bench-") as workdir,
        running_service(
            Path(workdir), root, args.max_tokens, env, repetition_penalty=args.repetition_penalty
        ) as server,
    ):
        runners: list[ChatRunner] = [ServiceClient(server.url, name) for name in names.values()]
        if not args.no_llama and llama.available() and (gguf := gguf_file()) is not None:
            from app.services.prompts import DEFAULT_SYSTEM_PROMPT

            runners.append(
                llama.LlamaRunner(gguf, args.threads or os.cpu_count() or 1, DEFAULT_SYSTEM_PROMPT, args.max_tokens)
            )
        else:
            _progress("llama.cpp: not measured (llama-cpp-python is not installed, or --no-llama)")
        samples = asyncio.run(_run(runners, args))
    figures = {name: _figures(values) for name, values in samples.items()}
    _report(args, samples, figures, names, time.monotonic() - started)


async def _run(runners: list[ChatRunner], args: argparse.Namespace) -> dict[str, Samples]:
    try:
        return await _measure(runners, args)
    finally:
        for runner in runners:
            if isinstance(runner, ServiceClient):
                await runner.close()


def _penalty(args: argparse.Namespace) -> str:
    if args.repetition_penalty is None:
        return "the service's default repetition penalty"
    return f"repetition penalty {args.repetition_penalty:g}"


def _report(
    args: argparse.Namespace,
    samples: dict[str, Samples],
    figures: dict[str, dict[str, float | None]],
    names: dict[str, str],
    elapsed_s: float,
) -> None:
    print(
        f"\nSmolLM2-135M-Instruct over HTTP (REST typed stream), greedy, {_penalty(args)}, "
        f"up to {args.max_tokens} tokens per reply, "
        f"{args.rounds} rounds, medians\n{_machine(args)}; {elapsed_s / 60:.1f} minutes\n"
    )
    print("\n".join(_table(figures)))
    print(f"\ntime to first token per turn of a {TURNS}-turn conversation (prompt tokens: the first runner's)")
    print("\n".join(_turn_table(samples)))
    if "llama.cpp" in figures:
        print("\nratios to llama.cpp (decode: engine / llama.cpp; time to first token: llama.cpp / engine)")
        print("\n".join(_ratios(figures, "llama.cpp")))
    errors = {name: s.errors for name, s in samples.items() if s.errors}
    for name, messages in errors.items():
        print(f"\n{name}: {len(messages)} failed replies (left out of the figures), first: {messages[0]}")
    targets = _targets(figures, names)
    print(f"\ntargets (the default model, {names['fp32']})")
    for target in targets:
        print(f"  {target.verdict:<5} {target.text:<72} {_cell(target.value, 2)}{target.unit}")
    if args.json:
        record = {
            "machine": _machine(args),
            "arguments": {key: str(value) for key, value in vars(args).items()},
            "figures": figures,
            "samples": {name: dataclasses.asdict(s) for name, s in samples.items()},
            "targets": [{**dataclasses.asdict(t), "verdict": t.verdict} for t in targets],
        }
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
