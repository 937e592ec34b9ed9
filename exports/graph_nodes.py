"""Helpers the graph rewrites share (exports/attention.py, packing.py, last_logits.py); onnx is imported lazily."""

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
