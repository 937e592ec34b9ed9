"""Helpers the graph rewrites share (exports/attention.py, packing.py, last_logits.py, float16.py); onnx is imported lazily."""

from __future__ import annotations

from typing import Any

import numpy as np


def producers(graph: Any) -> dict[str, Any]:
    """Every node output's name -> the node that produces it."""
    return {output: node for node in graph.node for output in node.output}


def constant_node(name: str, value: np.ndarray) -> Any:
    """A Constant node whose one output, `name`, is `value`."""
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Every value's name -> the nodes that read it, in graph order."""
    found: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def sort_topologically(graph: Any) -> None:
    """Reorder `graph`'s nodes so every node follows the nodes it reads from (appended nodes come last otherwise)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel.graph_topological_sort(graph, is_deterministic=True)
