"""Make the graph return logits for the last position only: `logits` becomes [batch, 1, vocab].

Generation reads only the last position's logits, but Optimum's graph projects every position of the input
onto the vocabulary: for a 1,000-token prompt on a 49k vocabulary that is a [1000, 576] x [576, 49152]
product (28 GFLOP) and a 197 MB output, most of the time to first token on a 2-core CPU. A Slice of the last
hidden state before the vocabulary projection removes that work; a decode step (one position) is unchanged.

Every client that generates from the graph reads `logits[:, -1]` (the engine, Optimum's generate, the
export's validation), so all of them run the edited file unchanged. What is lost is the logits of earlier
prompt positions (perplexity scoring), which this service never asks for.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from exports.graph_nodes import constant_node

log = logging.getLogger(__name__)

LOGITS = "logits"
LAST_HIDDEN = "last_position_hidden_state"


def keep_last_position_logits(model: Any) -> bool:
    """Edit `model` (an onnx ModelProto) in place; False (untouched) when `logits` is not a MatMul's output."""
    from onnx import helper

    graph = model.graph
    producer = next((node for node in graph.node if LOGITS in node.output), None)
    if producer is None or producer.op_type != "MatMul":
        log.info("logits are not produced by a MatMul; the graph keeps logits for every position")
        return False
    hidden = producer.input[0]
    constants = {
        "last_position_starts": np.array([-1], dtype=np.int64),
        "last_position_ends": np.array([np.iinfo(np.int64).max], dtype=np.int64),
        "last_position_axes": np.array([1], dtype=np.int64),
    }
    for name, value in constants.items():
        graph.node.append(constant_node(name, value))
    graph.node.append(helper.make_node("Slice", [hidden, *constants], [LAST_HIDDEN], name="/lm_head/LastPosition"))
    producer.input[0] = LAST_HIDDEN
    for output in graph.output:
        if output.name == LOGITS and len(output.type.tensor_type.shape.dim) == 3:
            dim = output.type.tensor_type.shape.dim[1]
            dim.Clear()
            dim.dim_value = 1
    return True
