"""A minimal ONNX Runtime decode loop for validation only (prefill, then one token per step with past).

Kept here rather than borrowed from `inference/` so that validating an export does not depend on the
engine it is meant to check; it reads the same graph layout the engine reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PAST_PREFIX = "past_key_values."
EMBED_TABLE = "embed_tokens.npy"  # beside a vision-language decoder, which takes `inputs_embeds`
PRESENT_PREFIX = "present."
FLOAT16 = "tensor(float16)"  # the cache's type in --dtype fp16 exports


class OrtDecoder:
    """Runs one export's graph; `logits_for(ids, prompt_len)` returns the logits that predict the continuation."""

    def __init__(self, graph: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.inputs = {item.name: item for item in self.session.get_inputs()}
        self.past_names = [name for name in self.inputs if name.startswith(PAST_PREFIX)]
        self.output_names = [item.name for item in self.session.get_outputs()]
        # a vision-language decoder reads embeddings: looked up from the table its export writes beside it
        self.embeddings = np.load(graph.parent / EMBED_TABLE, mmap_mode="r") if "inputs_embeds" in self.inputs else None

    def empty_past(self) -> dict[str, npt.NDArray[Any]]:
        past = {}
        for name in self.past_names:
            shape = self.inputs[name].shape
            dims = [1 if i == 0 else (0 if not isinstance(d, int) else d) for i, d in enumerate(shape)]
            past[name] = np.zeros(dims, dtype=np.float16 if self.inputs[name].type == FLOAT16 else np.float32)
        return past

    def feed(self, ids: list[int], start: int, past: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """The inputs of one run over `ids` after `start` cached positions (`past`; `empty_past()` for none)."""
        total = start + len(ids)
        feed: dict[str, npt.NDArray[Any]] = {"attention_mask": np.ones((1, total), dtype=np.int64), **past}
        if self.embeddings is not None:
            feed["inputs_embeds"] = np.asarray(self.embeddings[np.asarray(ids, dtype=np.int64)], np.float32)[None]
        else:
            feed["input_ids"] = np.array([ids], dtype=np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.arange(start, total, dtype=np.int64)[None, :]
        return feed

    def _step(
        self, ids: list[int], start: int, past: dict[str, npt.NDArray[Any]]
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[Any]]]:
        outputs = dict(zip(self.output_names, self.session.run(None, self.feed(ids, start, past)), strict=True))
        present = {
            PAST_PREFIX + name[len(PRESENT_PREFIX) :]: value
            for name, value in outputs.items()
            if name.startswith(PRESENT_PREFIX)
        }
        return outputs["logits"][0].astype(np.float32), present

    def logits_for(self, ids: list[int], prompt_len: int) -> npt.NDArray[np.float32]:
        """Prefill `ids[:prompt_len]` in one run, then feed the rest one token at a time through the cache.

        Returns the rows of positions `prompt_len - 1 .. len(ids) - 1`: the last prompt position and every
        fed continuation token. Exported graphs return logits for the last position only
        (exports/last_logits.py), so earlier prompt positions have none to compare.
        """
        logits, past = self._step(ids[:prompt_len], 0, self.empty_past())
        rows = [logits[-1:]]
        for position in range(prompt_len, len(ids)):
            step_logits, past = self._step([ids[position]], position, past)
            rows.append(step_logits)
        return np.concatenate(rows, axis=0)
