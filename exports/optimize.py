"""Graph rewrites for decoding, applied only where they were measured to speed it up.

Measured on SmolLM2-135M, CPU, 2 threads, ms per decoded token after a 40-token prompt, medians of A/B
runs in one process (so machine noise hits both alike):
- RotaryEmbedding fusion: float 29.5 -> 27.5 (-7%); int4 19.5 -> 17.4 (-11%). (A first, single-run
  measurement had suggested -30%: it was machine noise; measure A/B.)
- GroupQueryAttention in place of each layer's attention subgraph (exports/attention.py), on top of the
  rotary fusion: float 26.9 -> 22.6; int4 17.0 -> 13.4 (-21%); 2,476 -> 429 nodes run per step.
- Last-position logits (exports/last_logits.py): nothing per decoded token, but no [prompt, vocabulary]
  projection in prefill.
- Packed projections (exports/packing.py: q/k/v into one MatMul feeding GroupQueryAttention's packed form,
  gate/up into one MatMul and a Split), on top of the above: int4 11.6 -> 10.6 ms a token (-9%, engine
  A/B, same tokens), float 24.1 -> 23.4 ms a step; 430 -> 370 nodes run per step (211 -> 121 MatMulNBits).
  Not applied to int8 exports (one per-tensor weight scale would then span q, k and v; not measured).
SkipSimplifiedLayerNormalization fusion gave nothing more and needs symbolic shape inference (~13 s);
ONNX Runtime's own attention and gelu fusions find nothing in these graphs.

`optimize_model` took 35-47 s for the rotary fusion, nearly all in rebuilding the output-name index
for every pattern match; the fusion does not change the node list until it has matched everything,
so the class from `_indexed_model_class` keeps that index until a node is added or removed:
11 s, and node for node the same graph.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from exports.attention import use_group_query_attention
from exports.last_logits import keep_last_position_logits
from exports.packing import pack_projections
from exports.staging import replace_graph

log = logging.getLogger(__name__)


def has_rotary_embeddings(config: Any) -> bool:
    return getattr(config, "rope_theta", None) is not None or getattr(config, "rope_scaling", None) is not None


def optimize_for_decoding(graph: Path, config: Any, *, large: bool, pack: bool = True) -> tuple[str, ...]:
    """Rewrite `graph` in place for decoding; return the steps applied (empty: the graph is untouched).

    rotary: RotaryEmbedding fusion; group-query-attention: one attention node per layer (exports/attention.py),
    which needs the fused rotary caches; last-position-logits: prefill projects only the last position onto
    the vocabulary (exports/last_logits.py); packed-qkv and packed-gate-up (with `pack`, after
    group-query-attention): one MatMul for the projections of one input (exports/packing.py). Every step is optional: a step that fails or finds nothing to
    do leaves the graph as correct as before.
    """
    import onnx

    model, steps = _fused_model(graph, config)
    if model is None:
        model = _indexed_model_class()(onnx.load(str(graph)), 0, 0)
    if steps and use_group_query_attention(model.model, config):
        steps.append("group-query-attention")
    if keep_last_position_logits(model.model):
        steps.append("last-position-logits")
    if not steps:
        return ()
    model._forget()
    model.prune_graph()  # before packing: the replaced attention subgraphs still read the projections
    if pack and "group-query-attention" in steps:
        steps.extend(pack_projections(model.model))
        model._forget()
    model.topological_sort()
    _replace(graph, model, large)
    return tuple(steps)


def _fused_model(graph: Path, config: Any) -> tuple[Any, list[str]]:
    """The graph loaded with rotary embeddings fused, or (None, []) when the fusion does not apply or fails."""
    if not has_rotary_embeddings(config):
        return None, []
    try:
        import onnx

        model = _indexed_model_class()(onnx.load(str(graph)), int(config.num_attention_heads), int(config.hidden_size))
        model.disable_shape_inference()
        model.fuse_rotary_embeddings()
        if not model.get_fused_operator_statistics().get("RotaryEmbedding"):
            return None, []
    except Exception as exc:  # an optimization is optional: the unfused graph is still correct
        log.warning("rotary fusion skipped: %s: %s", type(exc).__name__, exc)
        return None, []
    return model, ["rotary"]


def _replace(graph: Path, model: Any, large: bool) -> None:
    replace_graph(graph, ".optimized", lambda path: model.save_model_to_file(str(path), use_external_data_format=large))


def _indexed_model_class() -> type:
    """ONNX Runtime's decoder graph model with a cached output-name index (see the module docstring)."""
    from onnxruntime.transformers.onnx_model_gpt2 import Gpt2OnnxModel

    class IndexedModel(Gpt2OnnxModel):  # type: ignore[misc]
        _outputs: dict[str, Any] | None = None

        def output_name_to_node(self, exclude_subgraphs: bool = False) -> dict[str, Any]:
            if exclude_subgraphs:
                return super().output_name_to_node(exclude_subgraphs)
            if self._outputs is None:
                self._outputs = super().output_name_to_node()
            return self._outputs

        def _forget(self) -> None:
            self._outputs = None

        def add_node(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().add_node(*args, **kwargs)

        def add_nodes(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().add_nodes(*args, **kwargs)

        def remove_node(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().remove_node(*args, **kwargs)

        def remove_nodes(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().remove_nodes(*args, **kwargs)

        def update_graph(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().update_graph(*args, **kwargs)

        def prune_graph(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().prune_graph(*args, **kwargs)

        def topological_sort(self, *args: Any, **kwargs: Any) -> Any:
            self._forget()
            return super().topological_sort(*args, **kwargs)

    return IndexedModel
