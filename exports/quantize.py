"""Quantize an exported graph with ONNX Runtime's quantizers; the result replaces the float graph.

- int8: dynamic quantization (int8 weights, activations quantized per run, per tensor). lm_head, the first
  and last decoder layers and every MLP output projection (down_proj) stay in float: their inputs carry
  activation outliers that one per-tensor scale cannot represent. Per-channel int8 is never used: with
  MatMulInteger in this ONNX Runtime it breaks the model.
- int4: weight-only 4-bit blocks (MatMulNBits) for every MatMul, lm_head included, since decoding is bound by
  reading the weights: blocks of 32 (fewer float scales to read), lm_head blocks of 16 (its weights are not on a
  4-bit grid in GGUF sources, and 32 cost agreement there), uint4 zero points.

int4 rounding: round-to-nearest cannot place a GGUF Q4_1 block's float minimum on an integer zero point, so every
block gets a constant offset. `search_blocks` instead picks, per block, the scale and zero point with the least
squared error, each element weighted by the mean square of the input channel it multiplies (`input_importance`:
the float graph run on CALIBRATION_CHATS), because a few channels dominate the products. Round-to-nearest's own
scale is one of the candidates, so the search is never worse than it. This recovers most of the agreement that
block 32 loses against block 16, at block 32's speed; it adds seconds to an export.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from exports import errors
from exports.errors import ExportError
from exports.progress import ExportProgress
from inference.export_folder import graph_bytes

log = logging.getLogger(__name__)

QuantizeMode = Literal["none", "int8", "int4"]
MODES: tuple[str, ...] = ("none", "int8", "int4")
INT4_BLOCK_SIZE = 32
INT4_LOGITS_BLOCK_SIZE = 16  # the vocabulary projection (MatMul producing `logits`): finer blocks, see above
INT4_SYMMETRIC = False
INT4_ACCURACY_LEVEL = 4  # int8 compute for the 4-bit blocks on CPU: 2-3x faster, about the same agreement
MAX_CODE = 15
# Candidate scales of the int4 search: range / (15 + step); 0 is round-to-nearest's own scale.
SCALE_STEPS = tuple(np.arange(-4, 9) * 0.5)
SEARCH_CHUNK = 1 << 18  # elements searched at a time (cache-sized working set)
# Calibration for the int4 search: what each MatMul input channel typically carries (a few channels of these
# models carry values 100-1000x the median; their weights' errors count that much more in the products).
CALIBRATION_TOKENS = 192  # per conversation, within any model's context
IMPORTANCE_FLOOR = 0.01  # of the mean, so a channel the text never excites still counts a little
# Conversations rendered with the export's chat template (the prompts the service sends), none of them among
# the validation prompts.
CALIBRATION_CHATS = (
    (
        "Can you recommend a good book for a long train journey? I like mysteries and history.",
        "Sure! A historical mystery combines both: the plot keeps you turning pages, the setting teaches you "
        "something, and the chapters are short enough to read between stations.",
    ),
    (
        "My tomato plants have yellow leaves at the bottom. What could be wrong?",
        "Yellow lower leaves usually mean the plant lacks nitrogen or gets too much water. Remove the yellow "
        "leaves, water only when the top of the soil is dry, and feed the plants once a week.",
    ),
    (
        "Write a Python function that merges two sorted lists.",
        "def merge(left, right):\n    result = []\n    i = j = 0\n    while i < len(left) and j < len(right):\n"
        "        if left[i] <= right[j]:\n            result.append(left[i])\n            i += 1\n"
        "        else:\n            result.append(right[j])\n            j += 1\n"
        "    return result + left[i:] + right[j:]",
    ),
    (
        "How many minutes are there in a week? Show the calculation.",
        "A day has 24 hours of 60 minutes: 24 x 60 = 1,440 minutes. A week has 7 days: 7 x 1,440 = 10,080 minutes.",
    ),
    (
        "Quelle est la meilleure saison pour visiter la Bretagne ?",
        "La fin du printemps et le début de l'automne : il fait doux, les plages sont calmes et les prix sont "
        "plus bas qu'en été. Liebe Grüße aus Hamburg!",
    ),
    (
        "Tell me a short story about a lighthouse keeper.",
        "Every evening the keeper climbed the 117 steps, wiped the salt from the great lens and lit the lamp. "
        "One stormy night a small boat appeared in the beam, and by morning its crew sat by his stove, safe.",
    ),
    (
        "What is a hash table, and why are lookups usually fast?",
        "A hash table stores values in an array of buckets. A hash function turns each key into a bucket "
        "number, so finding a key means computing its hash and looking in one bucket instead of searching the "
        "whole collection. Lookups take constant time on average; they slow down only when many keys collide "
        "in the same bucket, which a good hash function and resizing the table keep rare.",
    ),
    (
        "Draft a short thank-you note to a colleague who helped me move house.",
        "Dear Sam,\n\nThank you so much for giving up your Saturday to help me move. I could not have carried "
        "the sofa up three floors without you, and the pizza afterwards was the best part of the day. Next "
        "time you need a hand, I owe you one!\n\nBest wishes,\nAlex",
    ),
    (
        "Summarise the water cycle in a few sentences.",
        "The sun heats water in oceans, lakes and rivers until it evaporates. The vapour rises, cools and "
        "condenses into clouds. When the droplets grow heavy they fall as rain or snow, which runs into rivers "
        "or soaks into the ground, and finally flows back to the sea, where the cycle begins again.",
    ),
)

LAYER = re.compile(r"/layers\.(\d+)/")
# Names of the MLP output projection in the families we export (llama/mistral/qwen/phi3, gpt-neox, opt, gpt2).
MLP_OUTPUT = ("down_proj", "dense_4h_to_h", "/fc2/", "/mlp/c_proj/")
# Graphs above this size keep their weights in an external data file (protobuf's 2 GiB limit).
EXTERNAL_DATA_ABOVE = 1_800_000_000


def check_mode(mode: str) -> QuantizeMode:
    if mode not in MODES:
        raise ExportError(
            errors.INVALID_OPTION, f"--quantize {mode!r} is not supported; use one of {', '.join(MODES)}."
        )
    return mode  # type: ignore[return-value]


def quantize_graph(graph: Path, output: Path, mode: QuantizeMode) -> Path:
    """Write the quantized version of `graph` to `output` (a new file) and return it."""
    large = is_large(graph)
    try:
        with _root_logger_quiet():
            if mode == "int8":
                _int8(graph, output, large)
            elif mode == "int4":
                _int4(graph, output, large)
            else:
                raise ValueError(f"nothing to do for {mode}")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"{mode} quantization failed ({type(exc).__name__}: {exc})."
        ) from exc
    return output


def quantize_in_place(graph: Path, mode: QuantizeMode, progress: ExportProgress) -> Path:
    """Quantize beside the float graph, then let the quantized files take the float graph's name."""
    progress.start("quantize", f"Quantizing to {mode} with ONNX Runtime")
    work = graph.parent / f".quantize-{mode}"
    work.mkdir()
    quantized = quantize_graph(graph, work / graph.name, mode)
    for old in graph.parent.glob(graph.name + "*"):
        old.unlink()
    for new in work.iterdir():
        new.rename(graph.parent / new.name)
    shutil.rmtree(work)
    result = graph.parent / quantized.name
    progress.finish("quantize", f"{result.name}, {graph_bytes(result) / 1e6:.1f} MB")
    return result


@contextmanager
def _root_logger_quiet() -> Iterator[None]:
    """ONNX Runtime's quantizers log per-tensor INFO lines and advice on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def is_large(graph: Path) -> bool:
    """Whether a graph (with its external data) is too large to be saved as a single protobuf file."""
    return graph_bytes(graph) > EXTERNAL_DATA_ABOVE


def sensitive_matmuls(graph: Path) -> list[str]:
    """MatMul nodes int8 keeps in float: the one producing `logits`, the edge layers and MLP outputs."""
    import onnx

    nodes = [node for node in onnx.load(str(graph), load_external_data=False).graph.node if node.op_type == "MatMul"]
    keep = {node.name for node in nodes if "logits" in node.output}
    layers = {int(match.group(1)) for node in nodes if (match := LAYER.search(node.name))}
    markers = list(MLP_OUTPUT)
    if len(layers) > 2:
        markers += [f"/layers.{min(layers)}/", f"/layers.{max(layers)}/"]
    keep |= {node.name for node in nodes if any(marker in node.name for marker in markers)}
    return sorted(keep)


def _int8(graph: Path, output: Path, large: bool) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        graph,
        output,
        op_types_to_quantize=["MatMul"],
        per_channel=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=sensitive_matmuls(graph),
        use_external_data_format=large,
        # ONNX shape inference cannot type contrib ops' outputs (GroupQueryAttention): they are float here
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )


def _int4(graph: Path, output: Path, large: bool) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    importance = input_importance(graph)
    model = onnx.load(str(graph))
    logits = [node.name for node in model.graph.node if node.op_type == "MatMul" and "logits" in node.output]
    # two passes of ONNX Runtime's node writer (MatMulNBits, packed B, scales, zero points; one block size a
    # pass) with our rounding of the blocks: every MatMul but the vocabulary projection, then that one
    for block_size, exclude in ((INT4_BLOCK_SIZE, logits), (INT4_LOGITS_BLOCK_SIZE, [])):
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=block_size,
            is_symmetric=INT4_SYMMETRIC,
            accuracy_level=INT4_ACCURACY_LEVEL,
            nodes_to_exclude=exclude,
        )
        quantizer.node_quantizer = _searched_quantizer(quantizer.algo_config, importance)
        quantizer.process()
        model = quantizer.model.model
    quantizer.model.save_model_to_file(str(output), use_external_data_format=large)


def _searched_quantizer(config: Any, importance: dict[str, np.ndarray]) -> Any:
    """ONNX Runtime's DefaultWeightOnlyQuantizer with `search_blocks` in place of its round-to-nearest."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    class SearchedQuantizer(DefaultWeightOnlyQuantizer):  # type: ignore[misc]
        weight_name = ""

        def quantize_matmul(self, node: Any, graph_stack: list[Any]) -> Any:
            self.weight_name = node.input[1]
            return super().quantize_matmul(node, graph_stack)

        def qbits_block_quant(self, fp32weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            weight = np.asarray(fp32weight, dtype=np.float32)
            weights = importance.get(self.weight_name)
            if weights is not None and len(weights) != weight.shape[0]:
                weights = None
            codes, scales, zero_points = search_blocks(weight, self.config.block_size, weights)
            return pack_int4(codes, scales, zero_points)

    return SearchedQuantizer(config)


def search_blocks(
    weight: np.ndarray, block_size: int, importance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-bit asymmetric blocks of `weight` [K, N] along K: codes [N, blocks, block_size] (uint8 0..15), scales
    [N, blocks] (float32), integer zero points [N, blocks] (uint8); a value is `scale * (code - zero_point)`.

    Per block, the (scale, zero point) with the least squared error, each element weighted by `importance[k]`
    (the mean square of the MatMul's input channel k; uniform when None), among SCALE_STEPS candidates around
    round-to-nearest's range/15 (which is one of them, so the error is never above ONNX Runtime's), each also
    tried with the least-squares scale of its codes. Rows past K (padding) weigh nothing.
    """
    rows, cols = weight.shape
    blocks = -(-rows // block_size)
    padded = np.zeros((blocks * block_size, cols), dtype=np.float32)
    padded[:rows] = weight
    values = np.ascontiguousarray(padded.T).reshape(cols, blocks, block_size)
    weights = np.zeros(blocks * block_size, dtype=np.float32)
    weights[:rows] = 1.0 if importance is None else np.asarray(importance, dtype=np.float32)
    weights = weights.reshape(blocks, block_size)
    scales = np.empty((cols, blocks), dtype=np.float32)
    zero_points = np.empty((cols, blocks), dtype=np.float32)
    step = max(1, SEARCH_CHUNK // (blocks * block_size))
    for start in range(0, cols, step):
        chunk = slice(start, start + step)
        scales[chunk], zero_points[chunk] = _search(values[chunk], weights)
    codes = _codes(values, scales, zero_points) + zero_points[..., None]
    return codes.astype(np.uint8), scales, zero_points.astype(np.uint8)


def _search(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best (scale, zero point) per block of `values` [n, blocks, size] under the element `weights` [blocks, size]."""
    low = np.minimum(values.min(axis=-1), 0.0)
    span = np.maximum(values.max(axis=-1), 0.0) - low
    span[span == 0] = 1.0  # an all-zero block: any scale, every code at the zero point
    weighted = values * weights
    total = np.einsum("...i,...i->...", weighted, values)  # sum w x^2
    best_error = np.full(span.shape, np.inf, dtype=np.float32)
    best_scale = span / MAX_CODE
    best_zero = np.zeros_like(span)

    def keep(error: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> None:
        better = error < best_error
        best_error[better] = error[better]
        best_scale[better] = scale[better]
        best_zero[better] = zero[better]

    for extra in SCALE_STEPS:
        scale = span / (MAX_CODE + extra)
        zero = np.clip(np.round(-low / scale), 0, MAX_CODE)
        for _ in range(2):  # nearest codes for this scale, then the least-squares scale of those codes
            codes = _codes(values, scale, zero)
            cross = np.einsum("...i,...i->...", codes, weighted)  # sum w q x
            square = np.einsum("...i,...i->...", codes * weights, codes)  # sum w q^2
            keep(total - 2 * scale * cross + scale * scale * square, scale, zero)
            fitted = np.divide(cross, square, out=scale.copy(), where=square > 0)
            scale = np.where(fitted > 0, fitted, scale)
        keep(total - 2 * scale * cross + scale * scale * square, scale, zero)
    return best_scale, best_zero


def _codes(values: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Nearest signed codes (code - zero point) of `values` for one scale and zero point per block."""
    codes = np.round(values / scale[..., None])
    return np.clip(codes, -zero[..., None], (MAX_CODE - zero)[..., None], out=codes)


def pack_int4(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray) -> tuple[np.ndarray, ...]:
    """MatMulNBits' layout, as ONNX Runtime's quantizer writes it: B [N, blocks, size/2] and zero points
    [N, ceil(blocks/2)], two 4-bit values a byte, the first in the low nibble; scales [N, blocks]."""
    cols, blocks, _ = codes.shape
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    if blocks % 2:
        zero_points = np.concatenate([zero_points, np.zeros((cols, 1), dtype=np.uint8)], axis=1)
    return packed.astype(np.uint8), scales.astype(np.float32), (zero_points[:, 0::2] | (zero_points[:, 1::2] << 4))


def input_importance(graph: Path) -> dict[str, np.ndarray]:
    """Mean square of each input channel of every MatMul with a constant weight, keyed by the weight's name,
    from running the float graph on CALIBRATION_CHATS (with the export's tokenizer and chat template). Empty
    (every element weighs the same) when the folder has no tokenizer or the run fails.
    """
    if not (graph.parent / "tokenizer.json").is_file():
        return {}
    try:
        return _input_importance(graph)
    except Exception as exc:  # the plain squared error is still a valid (if weaker) rounding
        log.warning("int4 calibration failed, rounding without input weights (%s: %s)", type(exc).__name__, exc)
        return {}


def _input_importance(graph: Path) -> dict[str, np.ndarray]:
    import onnx

    from exports.graph_nodes import producers as producer_index
    from exports.ort_runner import OrtDecoder

    model = onnx.load(str(graph), load_external_data=False)
    constants = {init.name for init in model.graph.initializer}
    producers = producer_index(model.graph)
    inputs: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            source = node.input[0]
            producer = producers.get(source)
            if producer is not None and producer.op_type == "Slice":  # last-position logits: read every position
                source = producer.input[0]
            inputs[node.input[1]] = source
    wanted = sorted(set(inputs.values()))
    known = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in wanted if name not in known)
    calibration = graph.parent / f".calibration-{graph.name}"  # beside the graph: its external data resolves
    try:
        onnx.save(model, str(calibration))
        del model
        decoder = OrtDecoder(calibration)
        sums: dict[str, np.ndarray] = {}
        count = 0
        for ids in _calibration_ids(graph.parent):
            feed = decoder.feed(ids, 0, decoder.empty_past())
            for name, value in zip(wanted, decoder.session.run(wanted, feed), strict=True):
                rows = np.asarray(value, dtype=np.float64).reshape(-1, value.shape[-1])
                sums[name] = sums.get(name, 0.0) + np.square(rows).sum(axis=0)
            count += len(ids)
    finally:
        calibration.unlink(missing_ok=True)
    floor = IMPORTANCE_FLOOR
    return {weight: (s := sums[name] / count) + floor * s.mean() for weight, name in inputs.items()}


def _calibration_ids(folder: Path) -> list[list[int]]:
    """CALIBRATION_CHATS as the service would tokenize them (plain text when the model has no chat template)."""
    from inference.tokenizer import ChatTokenizer

    tokenizer = ChatTokenizer(folder)
    texts = [
        tokenizer.render_chat(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            add_generation_prompt=False,
        )
        if tokenizer.chat_template
        else f"{question}\n{answer}"
        for question, answer in CALIBRATION_CHATS
    ]
    return [tokenizer.encode(text)[:CALIBRATION_TOKENS] for text in texts]
