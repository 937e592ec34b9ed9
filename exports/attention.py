"""Replace each layer's exported attention subgraph with one GroupQueryAttention node (ONNX Runtime contrib op).

Optimum's Llama-family graph spends about 80 nodes per layer on attention: shape arithmetic for every
Reshape, the causal mask sliced per layer, a Concat of the whole cache, and `repeat_kv` (Unsqueeze, Expand,
Reshape), which copies the cache once more to give every query head its own key/value head. For a
30-layer 135M model that is about 2,400 kernel launches and two cache copies per decoded token (about a
fifth of an int4 step, see exports/optimize.py). GroupQueryAttention does rotary embedding, the cache append, grouped
heads, the causal mask and softmax in one kernel, so a layer keeps only its projections and norms.

The graph's interface does not change (same inputs, same `present.N.*` outputs, same shapes), so any
ONNX Runtime client (Optimum included) runs the file as before. One difference: the op reads the attention
mask as a length per row (`seqlens_k = sum(mask) - 1`), so rows of different lengths share a step when each
row's sequence is left-aligned in the cache; the engine binds one preallocated buffer as both past and
present (the op's shared-buffer mode), so a step appends in place.

Applied only when every layer has the exact pattern this code understands (rotary embeddings already fused
into RotaryEmbedding nodes, plain scaled-dot-product causal attention); otherwise the graph is untouched.
The export's validation against PyTorch checks the result like any other graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from exports import graph_nodes

log = logging.getLogger(__name__)

# Families whose attention is plain causal softmax(QK^T * scale) V with rotary embeddings and no
# sliding window, soft-capping or attention sinks; others keep Optimum's graph.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "smollm3")
SEQLENS = "gqa_seqlens_k"
TOTAL_LENGTH = "gqa_total_sequence_length"


@dataclass(frozen=True)
class LayerAttention:
    """What one layer's GroupQueryAttention needs, found in the exported graph."""

    layer: int
    query: str  # projection outputs, [batch, sequence, heads * head_size]
    key: str
    value: str
    output: str  # the o_proj input the attention result must feed
    scale: float
    cos_cache: str
    sin_cache: str
    interleaved: int


def use_group_query_attention(model: Any, config: Any) -> int:
    """Rewrite `model` (an onnx ModelProto) in place; return the number of layers rewritten (0: untouched)."""
    if not _supported(config):
        return 0
    graph = model.graph
    producers = graph_nodes.producers(graph)
    layers = []
    for layer in range(int(config.num_hidden_layers)):
        found = _find_layer(graph, producers, layer)
        if found is None:
            log.info("attention of layer %d does not match the known pattern; GroupQueryAttention not used", layer)
            return 0
        layers.append(found)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    graph.node.extend(_sequence_length_nodes())
    for found in layers:
        _rewire(graph, producers, found)
        graph.node.append(_gqa_node(found, heads, kv_heads))
    _ensure_opset(model, "com.microsoft", 1)
    return len(layers)


def _supported(config: Any) -> bool:
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return not getattr(config, "attn_logit_softcapping", None)


def _find_layer(graph: Any, producers: dict[str, Any], layer: int) -> LayerAttention | None:
    """Follow `present.N.key/value` back to the projections, and the softmax to the scale and the output."""
    key_concat = producers.get(f"present.{layer}.key")
    value_concat = producers.get(f"present.{layer}.value")
    if not _is(key_concat, "Concat") or not _is(value_concat, "Concat"):
        return None
    rotary_k = producers.get(key_concat.input[1])
    if not _is(rotary_k, "RotaryEmbedding"):
        return None
    key = _projection(producers, rotary_k.input[0])
    value = _projection(producers, value_concat.input[1])
    prefix = f"/model/layers.{layer}/self_attn/"
    attention = [node for node in graph.node if node.name.startswith(prefix)]
    rotary_q = [
        node
        for node in graph.node
        if _is(node, "RotaryEmbedding")
        and node is not rotary_k
        and _name(_projection_node(producers, node.input[0])).startswith(prefix + "q_proj")
    ]
    softmax = [node for node in attention if node.op_type == "Softmax"]
    o_proj = [node for node in attention if node.op_type == "MatMul" and "o_proj" in node.name]
    if key is None or value is None or len(rotary_q) != 1 or len(softmax) != 1 or len(o_proj) != 1:
        return None
    query = _projection(producers, rotary_q[0].input[0])
    scale = _scale(producers, softmax[0])
    if query is None or scale is None or list(rotary_k.input[1:]) != list(rotary_q[0].input[1:]):
        return None
    if rotary_k.input[1] != "position_ids" or len(rotary_k.input) != 4:
        return None
    return LayerAttention(
        layer=layer,
        query=query,
        key=key,
        value=value,
        output=o_proj[0].input[0],
        scale=scale,
        cos_cache=rotary_k.input[2],
        sin_cache=rotary_k.input[3],
        interleaved=_attribute(rotary_k, "interleaved", 0),
    )


def _projection_node(producers: dict[str, Any], heads_first: str) -> Any:
    """The node feeding `Transpose(0, 2, 1, 3) <- Reshape <- node` (the projection, with its bias if any)."""
    transpose = producers.get(heads_first)
    if not _is(transpose, "Transpose") or _attribute(transpose, "perm", None) != [0, 2, 1, 3]:
        return None
    reshape = producers.get(transpose.input[0])
    if not _is(reshape, "Reshape"):
        return None
    return producers.get(reshape.input[0])


def _projection(producers: dict[str, Any], heads_first: str) -> str | None:
    node = _projection_node(producers, heads_first)
    if node is None or node.op_type not in ("MatMul", "Add"):
        return None
    return str(node.output[0])


def _scale(producers: dict[str, Any], softmax: Any) -> float | None:
    """softmax(Add(MatMul(Mul(q, a), Mul(k^T, b)), mask)): the scale is a * b (each side may lack its Mul)."""
    add = producers.get(softmax.input[0])
    if not _is(add, "Add"):
        return None
    matmul = producers.get(add.input[0])
    if not _is(matmul, "MatMul"):
        return None
    scale = 1.0
    for operand in matmul.input:
        mul = producers.get(operand)
        if not _is(mul, "Mul"):
            continue
        constant = producers.get(mul.input[1])
        if not _is(constant, "Constant"):
            return None
        from onnx import numpy_helper

        value = numpy_helper.to_array(constant.attribute[0].t)
        if value.size != 1:
            return None
        scale *= float(value.reshape(-1)[0])
    return scale


def _sequence_length_nodes() -> list[Any]:
    """seqlens_k = sum(attention_mask) - 1 and total_sequence_length = attention_mask's width, as int32."""
    from onnx import helper

    return [
        graph_nodes.constant_node("gqa_axis_1", np.array([1], dtype=np.int64)),
        graph_nodes.constant_node("gqa_one", np.array(1, dtype=np.int64)),
        helper.make_node("ReduceSum", ["attention_mask", "gqa_axis_1"], ["gqa_mask_sum"], keepdims=0),
        helper.make_node("Sub", ["gqa_mask_sum", "gqa_one"], ["gqa_seqlens_k_64"]),
        helper.make_node("Cast", ["gqa_seqlens_k_64"], [SEQLENS], to=6),  # int32
        helper.make_node("Shape", ["attention_mask"], ["gqa_mask_shape"]),
        helper.make_node("Gather", ["gqa_mask_shape", "gqa_one"], ["gqa_total_64"], axis=0),
        helper.make_node("Cast", ["gqa_total_64"], [TOTAL_LENGTH], to=6),
    ]


def _rewire(graph: Any, producers: dict[str, Any], found: LayerAttention) -> None:
    """Free the present outputs' names and point the o_proj input at the new attention output."""
    for kind in ("key", "value"):
        graph.node.remove(producers[f"present.{found.layer}.{kind}"])
    old_output = producers[found.output]
    graph.node.remove(old_output)


def _gqa_node(found: LayerAttention, heads: int, kv_heads: int) -> Any:
    from onnx import helper

    layer = found.layer
    return helper.make_node(
        "GroupQueryAttention",
        [
            found.query,
            found.key,
            found.value,
            f"past_key_values.{layer}.key",
            f"past_key_values.{layer}.value",
            SEQLENS,
            TOTAL_LENGTH,
            found.cos_cache,
            found.sin_cache,
            "position_ids",
        ],
        [found.output, f"present.{layer}.key", f"present.{layer}.value"],
        name=f"/model/layers.{layer}/self_attn/GroupQueryAttention",
        domain="com.microsoft",
        num_heads=heads,
        kv_num_heads=kv_heads,
        scale=found.scale,
        do_rotary=1,
        rotary_interleaved=found.interleaved,
    )


def _ensure_opset(model: Any, domain: str, version: int) -> None:
    if not any(entry.domain == domain for entry in model.opset_import):
        from onnx import helper

        model.opset_import.append(helper.make_opsetid(domain, version))


def _name(node: Any) -> str:
    return "" if node is None else str(node.name)


def _is(node: Any, op_type: str) -> bool:
    return node is not None and node.op_type == op_type


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default
