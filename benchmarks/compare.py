"""`python -m benchmarks.compare` (`make benchmark`): our engine against Optimum and PyTorch, side by side.

For the default model's fp32 and int4 exports, on the CPU provider with 2 threads, greedy, 128 new tokens,
fixed prompts: decode tokens/s after a 32-token prose prompt and over four chat questions, and time to first
token for a 32- and a 1000-token prompt, for our engine (with its default drafting, and without), Optimum's
ORTModelForCausalLM.generate on the same ONNX file, and transformers' PyTorch generate on the fp32 weights.
The runners take turns within every round so that load from other processes hits all of them alike; each
figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks import runners
from benchmarks.models import (
    CHAT_QUESTIONS,
    LOOKAHEAD_TOKENS,
    NEW_TOKENS,
    PROMPT_LENGTHS,
    THREADS,
    VARIANTS,
    export_folder,
    prompt_ids,
)


@dataclass
class Figures:
    """Medians of one runner: seconds to the first token per prompt length, decode tokens/s (prose, chat)."""

    ttft_s: dict[int, float]
    decode_tps: float
    chat_decode_tps: float


def _timed(generate: runners.Generate, ids: Sequence[int], new_tokens: int) -> float:
    started = time.perf_counter()
    generate(ids, new_tokens)
    return time.perf_counter() - started


def _decode_seconds(generate: runners.Generate, ids: Sequence[int]) -> float:
    """Seconds for the NEW_TOKENS - 1 tokens after the first: a whole generation less a one-token one."""
    return max(_timed(generate, ids, NEW_TOKENS) - _timed(generate, ids, 1), 1e-9)


def _samples(
    generators: dict[str, runners.Generate], prompts: dict[int, list[int]], chats: list[list[int]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in generators}
    short = prompts[min(prompts)]
    for generate in generators.values():  # warm-up: first runs allocate and tune
        _timed(generate, short, 4)
    for _ in range(rounds):
        for name, generate in generators.items():
            for length, ids in prompts.items():
                samples[name].setdefault(f"ttft{length}", []).append(_timed(generate, ids, 1))
            samples[name].setdefault("decode", []).append((NEW_TOKENS - 1) / _decode_seconds(generate, short))
            chat_seconds = sum(_decode_seconds(generate, ids) for ids in chats)
            samples[name].setdefault("chat", []).append(len(chats) * (NEW_TOKENS - 1) / chat_seconds)
    return samples


def _figures(samples: dict[str, list[float]]) -> Figures:
    ttft = {int(key[4:]): statistics.median(values) for key, values in samples.items() if key.startswith("ttft")}
    return Figures(ttft, statistics.median(samples["decode"]), statistics.median(samples["chat"]))


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measuring rounds (median is reported)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    folders = {variant: export_folder(variant) for variant in args.variants}
    from inference import ChatTokenizer

    tokenizer = ChatTokenizer(folders[args.variants[0]])
    prompts = {length: prompt_ids(tokenizer.encode, length) for length in PROMPT_LENGTHS}
    chats = [tokenizer.encode_chat([{"role": "user", "content": question}]) for question in CHAT_QUESTIONS]
    generators: dict[str, runners.Generate] = {"pytorch (fp32 weights)": runners.pytorch()}
    for variant, folder in folders.items():
        generators[f"engine {variant}"] = runners.engine(folder, LOOKAHEAD_TOKENS)
        generators[f"engine {variant} no drafts"] = runners.engine(folder, 0)
        generators[f"optimum {variant}"] = runners.optimum(folder)
    samples = _samples(generators, prompts, chats, args.rounds)
    figures = {name: _figures(values) for name, values in samples.items()}

    print(f"\nSmolLM2-135M-Instruct, CPU, {THREADS} threads, greedy, {NEW_TOKENS} new tokens, {args.rounds} rounds")
    header = f"{'runner':<26}{'decode tok/s':>14}{'(range)':>13}{'chat tok/s':>12}" + "".join(
        f"{f'TTFT {n} ms':>14}" for n in PROMPT_LENGTHS
    )
    print(header)
    for name, fig in figures.items():
        row = f"{name:<26}{fig.decode_tps:>14.1f}{_spread(samples[name]['decode']):>13}{fig.chat_decode_tps:>12.1f}"
        print(row + "".join(f"{fig.ttft_s[n] * 1000:>14.0f}" for n in PROMPT_LENGTHS))
    torch_fig = figures["pytorch (fp32 weights)"]
    print("\nratios (engine / other; decode: higher is better, TTFT: other / engine, higher is better)")
    for variant in folders:
        theirs = figures[f"optimum {variant}"]
        for engine in (f"engine {variant}", f"engine {variant} no drafts"):
            ours = figures[engine]
            for label, other in (("optimum", theirs), ("pytorch", torch_fig)):
                decode = f"decode x{ours.decode_tps / other.decode_tps:.2f}"
                chat = f"chat x{ours.chat_decode_tps / other.chat_decode_tps:.2f}"
                ttft = "  ".join(f"TTFT{n} x{other.ttft_s[n] / ours.ttft_s[n]:.2f}" for n in PROMPT_LENGTHS)
                print(f"  {engine:<24} vs {label:<8} {decode}  {chat}  {ttft}")


if __name__ == "__main__":
    main()
