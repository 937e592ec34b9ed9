"""`python -m benchmarks.compare` (`make benchmark`): our engine against Optimum and PyTorch, side by side.

For the default model's fp32 and int4 exports, on the CPU provider with 2 threads, greedy, 128 new tokens,
fixed prompts: decode tokens/s and time to first token for a 32- and a 1000-token prompt, for our engine,
Optimum's ORTModelForCausalLM.generate on the same ONNX file, and transformers' PyTorch generate on the
fp32 weights. The runners take turns within every round so that load from other processes hits all of them
alike; each figure is the median over the rounds.
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
from benchmarks.models import NEW_TOKENS, PROMPT_LENGTHS, THREADS, VARIANTS, export_folder, prompt_ids


@dataclass
class Figures:
    """Medians of one runner: seconds to the first token per prompt length, and decode tokens/s."""

    ttft_s: dict[int, float]
    decode_tps: float


def _timed(generate: runners.Generate, ids: Sequence[int], new_tokens: int) -> float:
    started = time.perf_counter()
    generate(ids, new_tokens)
    return time.perf_counter() - started


def _samples(
    generators: dict[str, runners.Generate], prompts: dict[int, list[int]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in generators}
    short = prompts[min(prompts)]
    for generate in generators.values():  # warm-up: first runs allocate and tune
        _timed(generate, short, 4)
    for _ in range(rounds):
        for name, generate in generators.items():
            for length, ids in prompts.items():
                samples[name].setdefault(f"ttft{length}", []).append(_timed(generate, ids, 1))
            whole = _timed(generate, short, NEW_TOKENS)
            first = _timed(generate, short, 1)
            samples[name].setdefault("decode", []).append((NEW_TOKENS - 1) / max(whole - first, 1e-9))
    return samples


def _figures(samples: dict[str, list[float]]) -> Figures:
    ttft = {int(key[4:]): statistics.median(values) for key, values in samples.items() if key.startswith("ttft")}
    return Figures(ttft_s=ttft, decode_tps=statistics.median(samples["decode"]))


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

    encode = ChatTokenizer(folders[args.variants[0]]).encode
    prompts = {length: prompt_ids(encode, length) for length in PROMPT_LENGTHS}
    generators: dict[str, runners.Generate] = {"pytorch (fp32 weights)": runners.pytorch()}
    for variant, folder in folders.items():
        generators[f"engine {variant}"] = runners.engine(folder)
        generators[f"optimum {variant}"] = runners.optimum(folder)
    samples = _samples(generators, prompts, args.rounds)
    figures = {name: _figures(values) for name, values in samples.items()}

    print(f"\nSmolLM2-135M-Instruct, CPU, {THREADS} threads, greedy, {NEW_TOKENS} new tokens, {args.rounds} rounds")
    header = f"{'runner':<24}{'decode tok/s':>14}{'(range)':>13}" + "".join(
        f"{f'TTFT {n} ms':>14}" for n in PROMPT_LENGTHS
    )
    print(header)
    for name, fig in figures.items():
        row = f"{name:<24}{fig.decode_tps:>14.1f}{_spread(samples[name]['decode']):>13}"
        print(row + "".join(f"{fig.ttft_s[n] * 1000:>14.0f}" for n in PROMPT_LENGTHS))
    torch_fig = figures["pytorch (fp32 weights)"]
    print("\nratios (engine / other; decode: higher is better, TTFT: other / engine, higher is better)")
    for variant in folders:
        ours, theirs = figures[f"engine {variant}"], figures[f"optimum {variant}"]
        for label, other in (("optimum", theirs), ("pytorch", torch_fig)):
            ttft = "  ".join(f"TTFT{n} x{other.ttft_s[n] / ours.ttft_s[n]:.2f}" for n in PROMPT_LENGTHS)
            print(f"  {variant} vs {label:<8} decode x{ours.decode_tps / other.decode_tps:.2f}  {ttft}")


if __name__ == "__main__":
    main()
