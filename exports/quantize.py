"""Quantize an exported graph with ONNX Runtime's quantizers; the result replaces the float graph.

- int8: dynamic quantization (weights int8 ahead of time, activations quantized per run).
- int4: weight-only 4-bit blocks (MatMulNBits); activations stay float.
The choices below (block size, symmetry, per-channel) were measured for top-1 agreement on SmolLM2-135M;
see the export section of the README for the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from exports import errors
from exports.errors import ExportError

QuantizeMode = Literal["none", "int8", "int4"]
MODES: tuple[str, ...] = ("none", "int8", "int4")
INT4_BLOCK_SIZE = 32
INT4_SYMMETRIC = False
INT4_ACCURACY_LEVEL = 4  # int8 compute for the 4-bit blocks on CPU: faster, with the same agreement in our runs
INT8_PER_CHANNEL = True
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
    large = _graph_bytes(graph) > EXTERNAL_DATA_ABOVE
    try:
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


def _graph_bytes(graph: Path) -> int:
    return sum(path.stat().st_size for path in graph.parent.glob(graph.name + "*"))


def _int8(graph: Path, output: Path, large: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        graph,
        output,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=INT8_PER_CHANNEL,
        weight_type=QuantType.QInt8,
        use_external_data_format=large,
        extra_options={"MatMulConstBOnly": True},
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
