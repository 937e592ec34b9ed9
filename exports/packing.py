"""Pack the projections that read the same input into one MatMul per layer (fewer kernels a decoded token).

- q_proj, k_proj and v_proj feed one GroupQueryAttention node (exports/attention.py): one MatMul with the
  three weights side by side feeds the op's packed form (query = [q | k | v], key and value left empty).
- gate_proj and up_proj feed `SiLU(gate) * up`: one MatMul with both weights, then a Split into the two
  names the rest of the layer already reads.

Done on the float graph, before quantization, so int4 quantizes the packed weights (MatMulNBits blocks run
along the input dimension, so packing output columns changes no block). The graph's interface is unchanged.
Each packing is applied only when every layer has the exact pattern (plain MatMuls of one shared input by
2-D float initializers, outputs read by nothing else); otherwise that packing leaves the graph untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from exports import graph_nodes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packing:
    """Projections of one input to merge: `matmuls` in output-column order, replaced by `name`."""

    name: str
    matmuls: tuple[Any, ...]


def pack_projections(model: Any) -> tuple[str, ...]:
    """Rewrite `model` (an onnx ModelProto) in place; return the packings applied (empty: untouched)."""
    applied = []
    if _pack_attention_inputs(model):
        applied.append("packed-qkv")
    if _pack_gate_up(model):
        applied.append("packed-gate-up")
    return tuple(applied)


def _pack_attention_inputs(model: Any) -> int:
    graph = model.graph
    producers, readers, weights = _indexes(graph)
    found = []
    for node in graph.node:
        if node.op_type != "GroupQueryAttention" or node.domain != "com.microsoft":
            continue
        matmuls = tuple(producers.get(name) for name in node.input[:3])
        packing = _packing(matmuls, readers, weights, node.name.rsplit("/", 1)[0] + "/qkv_proj/MatMul")
        if packing is None:
            log.info("projections of %s do not match the known pattern; q/k/v not packed", node.name)
            return 0
        found.append((node, packing))
    for node, packing in found:
        packed = _merge(graph, packing, weights)
        node.input[0] = packed
        node.input[1] = ""
        node.input[2] = ""
    return len(found)


def _pack_gate_up(model: Any) -> int:
    """`Mul(Mul(g, Sigmoid(g)), u)` with g and u MatMuls of one input: MatMul([g | u]) -> Split -> g, u."""
    from onnx import helper

    graph = model.graph
    if not any(entry.domain in ("", "ai.onnx") and entry.version >= 13 for entry in model.opset_import):
        return 0  # Split reads its sizes from an input since opset 13
    producers, readers, weights = _indexes(graph)
    found = []
    for node in graph.node:
        if node.op_type != "Sigmoid":
            continue
        gate = producers.get(node.input[0])
        silu = [reader for reader in readers.get(node.output[0], []) if reader.op_type == "Mul"]
        if gate is None or len(silu) != 1 or sorted(silu[0].input) != sorted([gate.output[0], node.output[0]]):
            return 0
        product = readers.get(silu[0].output[0], [])
        if len(product) != 1 or product[0].op_type != "Mul":
            return 0
        up = producers.get(next((name for name in product[0].input if name != silu[0].output[0]), ""))
        # the gate's output is read twice (Sigmoid and the SiLU Mul), which is why it is checked by hand
        if {id(reader) for reader in readers.get(gate.output[0], [])} != {id(node), id(silu[0])}:
            return 0
        packing = _packing(
            (gate, up), readers, weights, gate.name.replace("gate_proj", "gate_up_proj"), single_reader=(False, True)
        )
        if packing is None or up is gate or "gate_proj" not in gate.name:
            log.info("MLP of %s does not match the known pattern; gate/up not packed", gate.name)
            return 0
        found.append(packing)
    for packing in found:
        gate, up = packing.matmuls
        sizes = [weights[matmul.input[1]].dims[1] for matmul in packing.matmuls]
        split_sizes = packing.name + "_split_sizes"
        outputs = [gate.output[0], up.output[0]]
        packed = _merge(graph, packing, weights)
        graph.node.append(graph_nodes.constant_node(split_sizes, np.array(sizes, np.int64)))
        graph.node.append(
            helper.make_node("Split", [packed, split_sizes], outputs, name=packing.name + "_Split", axis=-1)
        )
    return len(found)


def _indexes(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any]]:
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    weights = {initializer.name: initializer for initializer in graph.initializer}
    return graph_nodes.producers(graph), readers, weights


def _packing(
    matmuls: tuple[Any, ...],
    readers: dict[str, list[Any]],
    weights: dict[str, Any],
    name: str,
    single_reader: tuple[bool, ...] | None = None,
) -> Packing | None:
    from onnx import TensorProto

    single_reader = single_reader or (True,) * len(matmuls)
    if any(matmul is None or matmul.op_type != "MatMul" or matmul.domain not in ("", "ai.onnx") for matmul in matmuls):
        return None
    if len({matmul.input[0] for matmul in matmuls}) != 1:
        return None
    for matmul, single in zip(matmuls, single_reader, strict=True):
        weight = weights.get(matmul.input[1])
        if weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2:
            return None
        if len(readers.get(matmul.input[1], [])) != 1:  # a tied weight is left alone
            return None
        if single and len(readers.get(matmul.output[0], [])) != 1:
            return None
    if len({weights[matmul.input[1]].dims[0] for matmul in matmuls}) != 1:
        return None
    return Packing(name=name, matmuls=tuple(matmuls))


def _merge(graph: Any, packing: Packing, weights: dict[str, Any]) -> str:
    """Replace the packing's MatMuls with one; return its output's name."""
    from onnx import helper, numpy_helper

    arrays = [numpy_helper.to_array(weights[matmul.input[1]]) for matmul in packing.matmuls]
    weight_name = packing.name.replace("/", ".").strip(".") + ".weight"
    output = packing.name + "_output_0"
    for matmul in packing.matmuls:
        graph.initializer.remove(weights.pop(matmul.input[1]))
        graph.node.remove(matmul)
    packed = numpy_helper.from_array(np.concatenate(arrays, axis=1), weight_name)
    graph.initializer.append(packed)
    weights[weight_name] = packed
    graph.node.append(
        helper.make_node("MatMul", [packing.matmuls[0].input[0], weight_name], [output], name=packing.name)
    )
    return output
