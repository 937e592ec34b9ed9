"""Compare the ONNX graph with the PyTorch model on fixed prompts, and decide whether the export may stand.

Reference: for each prompt PyTorch generates greedily; its logits over prompt + continuation are the
truth. The ONNX graph is run the way the engine runs it (one prefill, then token by token through the
key-value cache) over the same ids, so the cache path is checked too. Figures:
- max_abs_logit_diff: largest |onnx - torch| over every vocabulary entry of the positions the graph
  returns: the last prompt position and the continuation (graphs return last-position logits only, so
  the prompt's earlier positions are checked through the cache they leave, not through their logits);
- top1_agreement: share of continuation positions where the graph's argmax equals the token PyTorch
  chose greedily (teacher-forced, so one early disagreement does not cascade).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exports import errors
from exports.errors import ExportError
from exports.ort_runner import OrtDecoder
from exports.progress import ExportProgress
from inference.manifest import Validation

if TYPE_CHECKING:
    from exports.loading import TorchSourceModel

PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence what a compiler does.",
    "List three colours.",
    "Translate 'good morning' into German.",
    "What is 12 plus 30?",
    "Grüße aus München: erkläre kurz, was ein Brezel ist.",
    "Give me a name for a small grey cat.",
)
NEW_TOKENS = 12

# Batch-1 decoding is too small to gain from a second thread, and a busy machine (tests beside the
# export) makes multi-threaded torch stall: SmolLM2's reference took 60 s with 2 threads, 9 s with 1.
VALIDATION_THREADS = 1

DEFAULT_MAX_LOGIT_DIFF = 1e-2
# float16 graphs (exports/float16.py), run by ONNX Runtime's CPU provider. Rounding grows with the logits' scale
# and the depth: measured 0.093 and 99% top-1 agreement on SmolLM2-135M (logits up to about 25), 4e-4 and 100% on
# the tiny test model. An overflow or a broken conversion differs by whole units or gives non-finite logits (counted
# as an infinite difference), which the bound catches; the greedy agreement is the finer check.
DEFAULT_MAX_FLOAT16_LOGIT_DIFF = 0.5
DEFAULT_MIN_FLOAT16_AGREEMENT = 0.9
# Measured on SmolLM2-135M: int8 84%, int4 81% (see exports/quantize.py); broken quantization lands far below.
DEFAULT_MIN_AGREEMENT = {"none": 0.0, "int8": 0.75, "int4": 0.7}


@dataclass(frozen=True)
class Thresholds:
    """What an export is held to: the float32 graph's logit difference, the quantized or float16 graph's greedy
    agreement, and the float16 graph's logit difference."""

    max_logit_diff: float  # the float32 graph's
    min_agreement: float  # the quantized or float16 graph's
    max_float16_logit_diff: float = DEFAULT_MAX_FLOAT16_LOGIT_DIFF  # the float16 graph's (--dtype fp16)


@dataclass(frozen=True)
class Reference:
    """PyTorch's view of one prompt: ids (prompt + greedy continuation) and logits at every position."""

    ids: list[int]
    prompt_len: int
    logits: np.ndarray


@dataclass(frozen=True)
class Comparison:
    max_abs_logit_diff: float
    top1_agreement: float
    compared_tokens: int
    decode_steps: int


def prompt_ids(loaded: TorchSourceModel, prompt: str) -> list[int]:
    """The prompt as the service would send it: through the chat template when there is one."""
    tokenizer = loaded.tokenizer
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict):  # some tokenizers answer a BatchEncoding
            ids = ids["input_ids"]
        return [int(token) for token in ids]
    return [int(token) for token in tokenizer(prompt)["input_ids"]]


def torch_references(
    loaded: TorchSourceModel, progress: ExportProgress, prompts: tuple[str, ...] = PROMPTS
) -> list[Reference]:
    import torch

    references = []
    progress.start("reference", "Running the PyTorch reference", total=len(prompts))
    threads = torch.get_num_threads()
    torch.set_num_threads(VALIDATION_THREADS)
    try:
        with torch.inference_mode():
            for prompt in prompts:
                ids = prompt_ids(loaded, prompt)
                full = _greedy(loaded, ids)
                logits = loaded.model(torch.tensor([full])).logits[0].float().numpy()
                references.append(Reference(full, len(ids), logits))
                progress.advance("reference")
    finally:
        torch.set_num_threads(threads)
    progress.finish("reference", f"{len(prompts)} prompts")
    return references


def _greedy(loaded: TorchSourceModel, ids: list[int]) -> list[int]:
    """Greedy continuation of NEW_TOKENS tokens, never stopping early (eos is just another token here)."""
    import torch

    output = loaded.model(torch.tensor([ids]), use_cache=True)
    full = list(ids)
    for step in range(NEW_TOKENS):
        token = int(output.logits[0, -1].argmax())
        full.append(token)
        if step + 1 < NEW_TOKENS:
            output = loaded.model(torch.tensor([[token]]), past_key_values=output.past_key_values, use_cache=True)
    return full


def compare(
    graph: Path, references: list[Reference], progress: ExportProgress, step: str, description: str
) -> Comparison:
    """Run `graph` over every reference and collect the figures."""
    decoder = OrtDecoder(graph, threads=VALIDATION_THREADS)
    max_diff = 0.0
    matches = compared = steps = 0
    progress.start(step, description, total=len(references))
    for reference in references:
        logits = decoder.logits_for(reference.ids, reference.prompt_len)
        expected = reference.logits[reference.prompt_len - 1 :]
        difference = float(np.max(np.abs(logits - expected)))
        # NaN would compare as "not above the bound"; a non-finite logit (a float16 overflow) fails every bound
        max_diff = max(max_diff, difference if np.isfinite(difference) else float("inf"))
        # position p predicts token p + 1; compare the greedy choices on the continuation positions
        predicted = logits[:-1].argmax(axis=-1)
        chosen = expected[:-1].argmax(axis=-1)
        matches += int((predicted == chosen).sum())
        compared += len(chosen)
        steps += len(reference.ids) - reference.prompt_len
        progress.advance(step)
    agreement = matches / compared if compared else 1.0
    progress.finish(step, f"max |Δlogit| {max_diff:.2e}, top-1 agreement {agreement:.1%}")
    return Comparison(max_diff, agreement, compared, steps)


def require_logit_diff(comparison: Comparison, threshold: float, kind: str = "") -> None:
    """Refuse a float graph whose logits stray from PyTorch's by more than `threshold` (`kind`: "float16 ")."""
    if comparison.max_abs_logit_diff > threshold:
        raise ExportError(
            errors.VALIDATION_FAILED,
            f"the {kind}ONNX graph differs from PyTorch by up to {comparison.max_abs_logit_diff:.3g} in the logits, "
            f"above the threshold {threshold:g}; the export was not kept. "
            "Pass --max-logit-diff to accept a larger difference.",
        )


def require_agreement(comparison: Comparison, mode: str, threshold: float) -> None:
    """Refuse a quantized or float16 graph whose greedy choices agree with PyTorch's less often than `threshold`."""
    if comparison.top1_agreement < threshold:
        half = mode == "float16"
        other = "Export with --dtype fp32" if half else "Try another --quantize mode"
        raise ExportError(
            errors.VALIDATION_FAILED,
            f"the {mode} graph agrees with the {'PyTorch' if half else 'unquantized'} model on {comparison.top1_agreement:.1%} of greedy "
            f"tokens, below the threshold {threshold:.1%}; the export was not kept. "
            f"{other}, or pass --min-agreement to accept less.",
        )


def validation_record(
    base: Comparison,
    final: Comparison,
    quantized: bool,
    half: bool,
    thresholds: Thresholds,
    *,
    prompts: int,
    decode_steps: int,
) -> Validation:
    """The manifest's figures: the float32 export's (`base`) and the export's as kept (`final`), with the
    thresholds that held for a `quantized` or a `half` (float16) graph."""
    return Validation(
        prompts=prompts,
        max_abs_logit_diff=base.max_abs_logit_diff,
        max_logit_diff_threshold=thresholds.max_logit_diff,
        passed=True,
        decode_steps=decode_steps,
        top1_agreement=final.top1_agreement,
        min_agreement_threshold=thresholds.min_agreement if quantized or half else None,
        compared_tokens=final.compared_tokens,
        quantized_max_abs_logit_diff=final.max_abs_logit_diff if quantized else None,
        float16_max_abs_logit_diff=final.max_abs_logit_diff if half else None,
        float16_max_logit_diff_threshold=thresholds.max_float16_logit_diff if half else None,
    )
