"""Three ways to generate greedily from the same weights, behind one `generate(ids, new_tokens)` call.

Every runner is timed the same way from outside (wall time of a whole `generate`), so the figures compare the
engines and not their own bookkeeping: time to first token is a 1-token generation, decode rate comes from the
difference between a 128-token and a 1-token generation. Stop tokens are off so every run makes all its tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.models import THREADS

Generate = Callable[[Sequence[int], int], Any]


def engine(folder: Path, lookahead_tokens: int) -> Generate:
    """Our engine (`inference.ChatModel`), CPU provider, THREADS intra-op threads; 0 lookahead: no drafts."""
    from inference import ChatModel, GenerationParams, RuntimeOptions

    options = RuntimeOptions(execution_provider="cpu", intra_op_num_threads=THREADS)
    model = ChatModel.load(folder, options)

    def generate(ids: Sequence[int], new_tokens: int) -> Any:
        params = GenerationParams(
            max_new_tokens=new_tokens, temperature=0, stop_token_ids=(), lookahead_tokens=lookahead_tokens
        )
        return model.generate(ids, params)

    return generate


def optimum(folder: Path) -> Generate:
    """Optimum's ORTModelForCausalLM on the same ONNX file, same provider and threads."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    # ONNX Runtime warns on every session that `logits_to_keep` is an overridable initializer (on purpose:
    # the engine feeds it, Optimum leaves the default); the engine's sessions log errors only, so do these
    options.log_severity_level = 3
    model = ORTModelForCausalLM.from_pretrained(
        folder, file_name="model.onnx", provider="CPUExecutionProvider", session_options=options, use_cache=True
    )
    return _hf_generate(model)


def pytorch() -> Generate:
    """transformers' PyTorch generate on the weights the exports were made from (the dequantized GGUF)."""
    import torch

    from exports.loading import load_source, quiet_libraries
    from exports.sources import resolve_source

    quiet_libraries()
    torch.set_num_threads(THREADS)
    model = load_source(resolve_source("default")).model.eval()
    return _hf_generate(model)


def _hf_generate(model: Any) -> Generate:
    import torch

    def generate(ids: Sequence[int], new_tokens: int) -> Any:
        with torch.no_grad():
            return model.generate(
                torch.tensor([list(ids)]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=0,
            )

    return generate
