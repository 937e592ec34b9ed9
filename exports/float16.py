"""Half-precision exports (`--dtype fp16`): the optimized float graph with its weights, activations and cache in float16.

Why: ONNX Runtime's CUDA GroupQueryAttention kernel takes float16 or bfloat16 only, so a float32 export runs its
attention on the CPU even with the CUDA provider. Half precision also halves the weights and the cache.

What stays in float32, and how:
- the RMS norms: each layer's `Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul -> Mul(weight)` chain becomes one
  SimplifiedLayerNormalization node (float16 in and out, the mean of squares computed in float32: `stash_type`),
  because a float16 square overflows above 256, which a residual stream's outlier channels can reach. A graph
  with a square left outside a fused norm is refused (EXPORT_UNSUPPORTED_ARCHITECTURE) rather than converted;
- softmax inside GroupQueryAttention (the kernel accumulates in float32 by itself);
- the `logits` output: one Cast at the end, so sampling reads float32 as with every other export (a decode step's
  logits are one row of the vocabulary; the cost is nothing next to the projection); a vision-language decoder's
  `inputs_embeds` input likewise, one Cast at the start, so the engine feeds every export the same embeddings;
- ONNX Runtime's converter keeps its default list of operators without float16 kernels in float32.
The key-value cache inputs (`past_key_values.*`) and outputs (`present.*`) are float16: the CUDA kernel reads
and appends them in place, and the cache is half the size.

ONNX Runtime's CPU provider (1.31) runs the converted graph too, so the export is validated against PyTorch on any
machine, at a bound that fits float16 (exports/validation.py). What that check covers, read from the CPU session's
optimized graph: GroupQueryAttention and SimplifiedLayerNormalization run their float16 kernels on the float16 cache;
MatMul, Add, Mul and Sigmoid have no float16 x86 kernels, so the runtime casts their float16 weights and inputs to
float32 around them. The weights' rounding, the cache's and attention's are checked; float16 rounding between the
element-wise operators is not (CUDA keeps those in float16, accumulating matrix products in float32).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exports import errors, graph_nodes
from exports.errors import ExportError
from exports.progress import ExportProgress
from exports.quantize import is_large
from exports.staging import replace_graph
from inference.export_folder import graph_bytes

log = logging.getLogger(__name__)

LOGITS = "logits"
EMBEDS = "inputs_embeds"  # a vision-language decoder's input: float32 too, one Cast at the start
FLOAT32 = 1  # onnx.TensorProto.FLOAT
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
# Element types the manifest records for the cache and the logits, as numpy names.
KV_CACHE_DTYPE = "float16"
LOGITS_DTYPE = "float32"


@dataclass(frozen=True)
class HalfPrecision:
    """What the conversion did: rewritten norms, for the export's progress line and the manifest's rewrites."""

    fused_norms: int


def convert_to_float16(graph: Path, *, large: bool) -> HalfPrecision:
    """Rewrite `graph` (and its external data) in place as a float16 graph with float32 `logits`."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(graph))
    fused = fuse_rms_norms(model)
    _refuse_unfused_squares(model)
    kept = [LOGITS] + [item.name for item in model.graph.input if item.name == EMBEDS]
    try:
        converted = convert_float_to_float16(model, keep_io_types=kept, disable_shape_infer=True)
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"the graph could not be converted to float16 ({type(exc).__name__}: {exc})."
        ) from exc
    _save(graph, converted, large)
    return HalfPrecision(fused)


def to_float16_in_place(
    graph: Path, rewrites: tuple[str, ...], progress: ExportProgress
) -> tuple[Path, tuple[str, ...]]:
    """Convert the validated float32 graph in place; the fused norms join the rewrites the manifest lists."""
    progress.start("float16", "Converting to float16 (norms fused, cache and weights in float16)")
    half = convert_to_float16(graph, large=is_large(graph))
    steps = (*rewrites, "simplified-layer-norm") if half.fused_norms else rewrites
    progress.finish("float16", f"{half.fused_norms} norms fused, {graph.name}, {graph_bytes(graph) / 1e6:.1f} MB")
    return graph, (*steps, "float16")


def fuse_rms_norms(model: Any) -> int:
    """Replace every RMS norm chain of `model` (an onnx ModelProto) with SimplifiedLayerNormalization; return how many.

    The chain is Llama's `weight * (x / sqrt(mean(x^2) + eps))`, exported with optional Casts to float32 on
    either side of the normalization (from `hidden_states.to(torch.float32)` and back).
    """
    graph = model.graph
    weights = {initializer.name for initializer in graph.initializer}
    producers = graph_nodes.producers(graph)
    consumers = graph_nodes.consumers(graph)
    removed: set[str] = set()
    norms = []
    for pow_node in graph.node:
        found = _match_norm(pow_node, producers, consumers, weights) if pow_node.op_type == "Pow" else None
        if found is not None:
            chain, root, weight, output, epsilon = found
            removed.update(node.output[0] for node in chain)
            norms.append(_norm_node(root, weight, output, epsilon, name=f"{_scope(pow_node)}SimplifiedLayerNorm"))
    if norms:
        kept = [node for node in graph.node if node.output[0] not in removed]
        del graph.node[:]
        graph.node.extend(kept + norms)
        _drop_unused_constants(graph)
        graph_nodes.sort_topologically(graph)
    return len(norms)


def _match_norm(
    pow_node: Any, producers: dict[str, Any], consumers: dict[str, list[Any]], weights: set[str]
) -> tuple[list[Any], str, str, str, float] | None:
    """(nodes to remove, normalized input, weight, output name, epsilon) of the chain starting at `pow_node`."""
    x = pow_node.input[0]
    if _constant(producers, pow_node.input[1]) != 2.0:
        return None
    mean = _only_consumer(consumers, pow_node.output[0], "ReduceMean")
    add = mean and _only_consumer(consumers, mean.output[0], "Add")
    sqrt = add and _only_consumer(consumers, add.output[0], "Sqrt")
    div = sqrt and _only_consumer(consumers, sqrt.output[0], "Div")
    scale = div and _only_consumer(consumers, div.output[0], "Mul")
    if not scale or _constant(producers, div.input[0]) != 1.0 or x not in scale.input:
        return None
    epsilon = _constant(producers, add.input[1])
    if epsilon is None or not _reduces_last_axis(producers, mean):
        return None
    chain = [pow_node, mean, add, sqrt, div, scale]
    normalized = scale.output[0]
    cast = _only_consumer(consumers, normalized, "Cast")
    if cast is not None and _attribute(cast, "to") == FLOAT32:
        chain.append(cast)
        normalized = cast.output[0]
    weighting = _only_consumer(consumers, normalized, "Mul")
    if weighting is None:
        return None
    weight = next((name for name in weighting.input if name != normalized), None)
    if not _is_weight(producers, weight, weights):
        return None
    chain.append(weighting)
    root = x
    leading = producers.get(x)
    if (
        leading is not None
        and leading.op_type == "Cast"
        and _attribute(leading, "to") == FLOAT32
        and {node.output[0] for node in consumers.get(x, [])} == {pow_node.output[0], scale.output[0]}
    ):
        chain.append(leading)
        root = leading.input[0]
    return chain, root, str(weight), str(weighting.output[0]), float(epsilon)


def _is_weight(producers: dict[str, Any], name: str | None, weights: set[str]) -> bool:
    """An initializer, or an Identity of one (Optimum aliases equal weights, such as all-ones norms, that way)."""
    node = producers.get(name) if name is not None else None
    if node is not None and node.op_type == "Identity":
        name = node.input[0]
    return name in weights


def _norm_node(root: str, weight: str, output: str, epsilon: float, name: str) -> Any:
    from onnx import helper

    # stash_type 1: the mean of squares and the inverse root in float32, whatever the input's type
    return helper.make_node(
        "SimplifiedLayerNormalization",
        [root, weight],
        [output],
        name=name,
        axis=-1,
        epsilon=epsilon,
        stash_type=1,
    )


def _refuse_unfused_squares(model: Any) -> None:
    """A square of activations left outside a fused norm would overflow float16 in real models: refuse."""
    weights = {initializer.name for initializer in model.graph.initializer}
    squares = [node.name or node.output[0] for node in model.graph.node if node.op_type == "Pow"]
    squares = [name for name in squares if name not in weights]
    if squares:
        raise ExportError(
            errors.UNSUPPORTED_ARCHITECTURE,
            f"--dtype fp16 needs every normalization of the graph in one fused node, but {len(squares)} square(s) "
            f"remain outside one (first: {squares[0]}); their float16 results would overflow. "
            "Export this model with --dtype fp32.",
        )


def _save(graph: Path, model: Any, large: bool) -> None:
    import onnx

    def save(path: Path) -> None:
        if large:
            onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
        else:
            onnx.save(model, str(path))

    replace_graph(graph, ".float16", save)


def _drop_unused_constants(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    for node in [node for node in graph.node if node.op_type == "Constant" and node.output[0] not in used]:
        graph.node.remove(node)


def _only_consumer(consumers: dict[str, list[Any]], name: str, op_type: str) -> Any:
    found = consumers.get(name, [])
    return found[0] if len(found) == 1 and found[0].op_type == op_type else None


def _constant(producers: dict[str, Any], name: str) -> float | None:
    """The value of a one-element Constant node's output, or None."""
    from onnx import numpy_helper

    node = producers.get(name)
    if node is None or node.op_type != "Constant" or not node.attribute:
        return None
    value = numpy_helper.to_array(node.attribute[0].t)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _reduces_last_axis(producers: dict[str, Any], mean: Any) -> bool:
    axes = _attribute(mean, "axes")
    if axes is None and len(mean.input) > 1:
        axes = [_constant(producers, mean.input[1])]
    return axes is not None and list(axes) == [-1] and _attribute(mean, "keepdims") in (None, 1)


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return None


def _scope(node: Any) -> str:
    """`/model/layers.0/input_layernorm/` for `/model/layers.0/input_layernorm/Pow`."""
    name = str(node.name)
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""
