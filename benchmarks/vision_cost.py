"""`python -m benchmarks.vision_cost`: what one image costs a SmolVLM-256M-sized vision export in the engine.

Builds an Idefics3 model with SmolVLM-256M-Instruct's architecture (the sizes of its `config.json` and of its
processor, written out below) and random weights, with a small stand-in tokenizer that has SmolVLM's special
tokens and chat template: the hub is not reachable where this runs, and the costs depend on the shapes, not on
the weights. Exports it with `beth-chat export`'s pipeline (validation included), once with the processor's
image splitting (SmolVLM's default: the longest edge resized to 2048 pixels, 512-pixel tiles and the whole
image) and once without (one 512-pixel square), and measures in the engine, one stream, greedy, no stop token:
image preprocessing and encoding (ms), time to first token of a turn with one image (ms: encoding and prefill
included) and the decode rate of that turn (tokens/s). Each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.fixtures.vision_models import SMOLVLM_CHAT_TEMPLATE

# HuggingFaceTB/SmolVLM-256M-Instruct: config.json (the sizes that set the costs) and preprocessor_config.json
SMOLVLM_256M = {
    "scale_factor": 4,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49280,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
    },
    "tie_word_embeddings": False,
}
SMOLVLM_PROCESSOR = {
    "size": {"longest_edge": 2048},
    "max_image_size": {"longest_edge": 512},
    "resample": 1,  # Lanczos
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
IMAGE_SEQ_LEN = 64  # (512 / 16)^2 patches, pixel-shuffled by 4 x 4
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>"]
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>"] + [
    f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)
]
QUESTION = "Can you describe this image?"
IMAGE_SIZE = (1024, 768)  # a photo's shape: 4 x 3 tiles and the whole image when split


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vision_cost", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="measuring rounds; medians are reported (default 3)")
    parser.add_argument("--max-tokens", type=int, default=32, help="reply length of each turn (default 32)")
    parser.add_argument("--no-split", action="store_true", help="only the single-image (no splitting) export")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("BETH_BENCH_CACHE", Path.home() / ".cache" / "beth-chat-bench")) / "vision",
        help="where the built models and exports are kept between runs (delete it after changing exports/)",
    )
    return parser.parse_args(argv)


def _tokenizer() -> Any:
    """A small byte-level BPE with SmolVLM's special and image tokens and chat template (a stand-in: prompts
    take a different number of text tokens than with SmolVLM's own, the image tokens are the same)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([QUESTION, "User: Assistant: System: a picture of a cat on a red sofa"] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    tokenizer.chat_template = SMOLVLM_CHAT_TEMPLATE
    return tokenizer


def build_model(folder: Path, split: bool) -> Path:
    """Save a random Idefics3ForConditionalGeneration of SmolVLM-256M's shapes with its processor in `folder`."""
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    if (folder / "config.json").is_file():
        return folder
    tokenizer = _tokenizer()
    image_processor = Idefics3ImageProcessor(do_image_splitting=split, **SMOLVLM_PROCESSOR)
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    end = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    config = Idefics3Config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        **{**SMOLVLM_256M, "text_config": {**SMOLVLM_256M["text_config"], "eos_token_id": end, "bos_token_id": 1}},
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=end, pad_token_id=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def export(source: Path, models: Path, alias: str) -> Path:
    """The engine export of `source` (built once; validation included)."""
    from exports.export import export_model

    if not (models / alias / "manifest.json").is_file():
        print(f"exporting {alias} (validation against PyTorch included; minutes)", flush=True)
        export_model(str(source), models_dir=models, alias=alias)
    return models / alias


def measure(folder: Path, rounds: int, max_tokens: int) -> dict[str, Any]:
    """Median preprocessing and encoding ms, time to first token ms and decode tokens/s of one image turn."""
    from exports.vision_validation import synthetic_png
    from inference import ChatModel, GenerationParams
    from inference.events import GenerationResult
    from inference.image_preprocess import decode_image, preprocess
    from inference.manifest import read_manifest

    image = synthetic_png("gradient", *IMAGE_SIZE)
    manifest = read_manifest(folder)
    assert manifest.vision is not None
    chat = ChatModel.load(folder)
    assert chat.model.vision is not None
    messages = [{"role": "user", "content": QUESTION, "images": [image]}]
    params = GenerationParams(max_new_tokens=max_tokens, temperature=0, repetition_penalty=1.0, stop_token_ids=())
    samples: dict[str, list[float]] = {"preprocess_ms": [], "encode_ms": [], "ttft_ms": [], "decode_tps": []}
    try:
        frames = len(preprocess(decode_image(image), manifest.vision.preprocessing))
        prompt_tokens = chat.count_chat_tokens(messages)
        for index in range(rounds):
            started = time.perf_counter()
            preprocess(decode_image(image), manifest.vision.preprocessing)
            samples["preprocess_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            chat.model.vision.encode([image])
            samples["encode_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            run = chat.start_chat(messages, params)
            result = None
            for event in run.events():
                result = event
            first = run.generator.first_token_at
            assert first is not None
            assert isinstance(result, GenerationResult)
            samples["ttft_ms"].append((first - started) * 1000)
            samples["decode_tps"].append(result.usage.decode_tokens_per_s or 0.0)
            print(
                f"  round {index + 1}: encode {samples['encode_ms'][-1]:.0f} ms, "
                f"first token {samples['ttft_ms'][-1]:.0f} ms, decode {samples['decode_tps'][-1]:.1f} tok/s",
                flush=True,
            )
    finally:
        chat.close()
    figures = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    return {
        "frames": frames,
        "prompt_tokens": prompt_tokens,
        "export_seconds": manifest.export_seconds,
        **figures,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    print(f"machine: {machine}; image {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} PNG, {args.rounds} rounds", flush=True)
    results = {}
    for split in (False,) if args.no_split else (False, True):
        name = "split" if split else "single"
        source = build_model(args.cache / "hf" / f"smolvlm-256m-shapes-{name}", split)
        folder = export(source, args.cache / "models", f"smolvlm-256m-shapes-{name}")
        print(f"{name}: measuring", flush=True)
        results[name] = measure(folder, args.rounds, args.max_tokens)
    print()
    print(f"{'':8} {'frames':>6} {'prompt':>7} {'prep ms':>8} {'encode ms':>10} {'TTFT ms':>8} {'decode tok/s':>13}")
    for name, row in results.items():
        print(
            f"{name:8} {row['frames']:>6} {row['prompt_tokens']:>7} {row['preprocess_ms']:>8.0f} "
            f"{row['encode_ms']:>10.0f} {row['ttft_ms']:>8.0f} {row['decode_tps']:>13.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
