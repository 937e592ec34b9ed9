"""Quantize an exported graph with ONNX Runtime's quantizers; the result replaces the float graph.

- int8: dynamic quantization (weights int8 ahead of time, activations quantized per run, per tensor).
- int4: weight-only 4-bit blocks (MatMulNBits), every MatMul including the vocabulary projection (lm_head).
int8 keeps lm_head, the first and last decoder layers and every MLP output projection (down_proj) in
float: its input carries the large activation outliers that one per-tensor activation scale cannot
represent. int4 quantizes lm_head too: in float it is 113 MB of the weights read for every decoded token
of SmolLM2-135M (the other layers in int4: about 85 MB), and decoding is bound by reading the weights. Measured on SmolLM2-135M, greedy
top-1 agreement with the float model over the validation prompts (96 tokens):
  int8 everything 72%; without lm_head 76%; without lm_head + first/last layer 82% unfused,
  72% once rotary embeddings are fused (int8 is that fragile here); + down_proj 84% fused.
  int8 per-channel 2% (broken with MatMulInteger in this ONNX Runtime: never use it).
  int4 block 32: 66%; block 32 without lm_head 69%; block 16 without lm_head 81% (fused or not);
  block 16 with lm_head also 81% (with GroupQueryAttention), and decoding 13.4 -> 10.8 ms a token (2 threads, A/B).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from exports import errors
from exports.errors import ExportError

QuantizeMode = Literal["none", "int8", "int4"]
MODES: tuple[str, ...] = ("none", "int8", "int4")
INT4_BLOCK_SIZE = 16
INT4_SYMMETRIC = False
INT4_ACCURACY_LEVEL = 4  # int8 compute for the 4-bit blocks on CPU: 2-3x faster, about the same agreement
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


def graph_bytes(graph: Path) -> int:
    """Bytes on disk of a graph and its external data files."""
    return sum(path.stat().st_size for path in graph.parent.glob(graph.name + "*"))


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

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(graph)),
        bits=4,
        block_size=INT4_BLOCK_SIZE,
        is_symmetric=INT4_SYMMETRIC,
        accuracy_level=INT4_ACCURACY_LEVEL,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(output), use_external_data_format=large)
