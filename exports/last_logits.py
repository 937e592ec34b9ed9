"""Make the graph return logits for the last positions only: `logits` becomes [batch, logits_to_keep, vocab].

Generation reads only the last position's logits, but Optimum's graph projects every position of the input
onto the vocabulary: for a 1,000-token prompt on a 49k vocabulary that is a [1000, 576] x [576, 49152]
product (28 GFLOP) and a 197 MB output, most of the time to first token on a 2-core CPU. A Slice of the last
hidden state before the vocabulary projection removes that work; a decode step (one position) is unchanged.

How many positions is the optional input `logits_to_keep` (int64 [1]), an initializer that is also a graph
input, 1 unless fed. ONNX Runtime lists it among the overridable initializers, not the inputs, so every
client that only reads `logits[:, -1]` (Optimum's generate, the export's validation) runs the edited file
unchanged, while the engine feeds it to check several drafted tokens in one step (inference/lookahead.py).
What is lost is the logits of earlier prompt positions (perplexity scoring), which this service never asks for.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from exports.graph_nodes import constant_node

log = logging.getLogger(__name__)

LOGITS = "logits"
LAST_HIDDEN = "last_position_hidden_state"
LOGITS_TO_KEEP = "logits_to_keep"


def keep_last_position_logits(model: Any) -> bool:
    """Edit `model` (an onnx ModelProto) in place; False (untouched) when `logits` is not a MatMul's output."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    producer = next((node for node in graph.node if LOGITS in node.output), None)
    if producer is None or producer.op_type != "MatMul":
        log.info("logits are not produced by a MatMul; the graph keeps logits for every position")
        return False
    hidden = producer.input[0]
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), LOGITS_TO_KEEP))
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    ends = "last_positions_ends"
    axes = "last_positions_axes"
    graph.node.append(constant_node(ends, np.array([np.iinfo(np.int64).max], dtype=np.int64)))
    graph.node.append(constant_node(axes, np.array([1], dtype=np.int64)))
    graph.node.append(helper.make_node("Neg", [LOGITS_TO_KEEP], ["last_positions_starts"], name="/lm_head/KeepCount"))
    slice_inputs = [hidden, "last_positions_starts", ends, axes]
    graph.node.append(helper.make_node("Slice", slice_inputs, [LAST_HIDDEN], name="/lm_head/LastPositions"))
    producer.input[0] = LAST_HIDDEN
    for output in graph.output:
        if output.name == LOGITS and len(output.type.tensor_type.shape.dim) == 3:
            dim = output.type.tensor_type.shape.dim[1]
            dim.Clear()
            dim.dim_param = LOGITS_TO_KEEP
    return True
