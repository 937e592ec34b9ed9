"""`OnnxCausalLM`: one decoder graph with a key-value cache, run one step at a time.

The graph itself says which `past_key_values.N.key/value` input pairs with which `present.N.key/value`
output, whether it wants `position_ids`, and the cache's shape and type; nothing is guessed from the model
family. Each sequence keeps its cache as the OrtValues the last step produced, fed straight back as the
next step's inputs (`run_with_ortvaluevector` on CPU, I/O binding on CUDA), so the cache is never copied
through numpy and stays on the GPU under CUDA.

Graphs exported with GroupQueryAttention and a `logits_to_keep` input (see exports/) also check drafted
tokens: `forward` returns the logits of the last `logits_to_keep` positions, and `rewind` forgets the
positions of rejected drafts without touching the cache. The op reads only as many cache positions as the
attention mask's sum says, so the stale ones after them are ignored and overwritten by the next step.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state as _C

from inference.errors import (
    HF_CANCELLED,
    HF_INFERENCE_FAILED,
    HF_MEMORY_ERROR,
    HF_MODEL_LOAD_FAILED,
    InferenceError,
)
from inference.execution import (
    CUDA,
    MAX_LOOKAHEAD_TOKENS,
    RuntimeOptions,
    describe_choice,
    provider_list,
    resolve_provider,
    session_options,
)
from inference.export_folder import ExportInfo, read_export

log = logging.getLogger(__name__)

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_CPU_DEVICE = _C.OrtDevice(_C.OrtDevice.cpu(), _C.OrtDevice.default_memory(), 0, 0)
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
LOGITS_TO_KEEP = "logits_to_keep"
# exports/optimize.py's name for the rewrite whose attention reads the cache up to the mask's sum only
GROUP_QUERY_ATTENTION = "group-query-attention"
# Until a step of n tokens has been timed, its cost is taken as 1 + this * (n - 1) one-token steps (measured
# on SmolLM2-135M, 2 threads: about 0.19 in int4, 0.03 in fp32), which lets drafting start cautiously.
STEP_COST_PRIOR = 0.25
_STEP_AVERAGING = 0.2  # weight of the newest timing in a step count's moving average


@dataclass(frozen=True, slots=True)
class CacheSlot:
    """One cache tensor: the past input, the present output that refills it, and its empty shape."""

    past_name: str
    present_name: str
    empty_shape: tuple[int, ...]
    dtype: type


class SequenceState:
    """The cache of one sequence (OrtValues from the last step); owned by one generator, released at its end.

    On CPU the cache is a list of C-level OrtValues handed to the session's public `run_with_ortvaluevector`:
    it skips the per-tensor Python wrappers that I/O binding builds and rebinds every step (60 cache tensors
    for a 30-layer model, about 2 ms a step) and those `run_with_ort_values` builds and checks (36 vs 120 us
    a call with 61 tensors). On CUDA an I/O binding places every output on the GPU and the logits on the CPU,
    so the cache never leaves the device.
    """

    def __init__(self, model: OnnxCausalLM) -> None:
        self.model = model
        self.length = 0  # tokens in the cache that count; after a `rewind` the cache holds more, unread
        self.run_options = ort.RunOptions()
        self.cache: list[Any] = []  # C-level OrtValues, in `model.cache_slots` order
        self.binding: ort.IOBinding | None = None
        self._inputs: tuple[np.ndarray, ...] = ()  # keeps the numpy memory behind the input OrtValues alive
        if model.device == "cpu":
            self.cache = [empty._get_c_value() for empty in model.empty_cache]
        else:
            self.binding = model.session.io_binding()
            for slot, empty in zip(model.cache_slots, model.empty_cache, strict=True):
                self.binding.bind_ortvalue_input(slot.past_name, empty)

    def release(self) -> None:
        """Drop the cache now rather than when the garbage collector gets to it."""
        self.cache = []
        self._inputs = ()
        if self.binding is not None:
            self.binding.clear_binding_inputs()
            self.binding.clear_binding_outputs()

    def interrupt(self) -> None:
        """Ask a running step to stop early (used for cancellation during a long prefill)."""
        self.run_options.terminate = True


class OnnxCausalLM:
    """An export folder opened for generation: the session, its cache layout, and a `forward` step."""

    def __init__(self, info: ExportInfo, options: RuntimeOptions | None = None) -> None:
        self.info = info
        self.options = options or RuntimeOptions()
        self.provider = resolve_provider(self.options.execution_provider, self.options.device_id)
        self.provider_note = describe_choice(self.options.execution_provider, self.provider)
        started = time.perf_counter()
        self.session = _open_session(info.onnx_path, self.options, self.provider)
        self.load_seconds = time.perf_counter() - started
        self.device = "cuda" if self.provider == CUDA else "cpu"
        self.cache_slots = _cache_slots(self.session)
        self.has_position_ids = any(i.name == "position_ids" for i in self.session.get_inputs())
        self.empty_cache = [self._empty(slot) for slot in self.cache_slots]
        self._fetch = ["logits", *(slot.present_name for slot in self.cache_slots)]
        self._fetch_devices = [_CPU_DEVICE] * len(self._fetch)
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        #: whether `forward` can return several positions' logits and `rewind` drop positions (CPU only:
        #: the CUDA op's reading of a cache longer than the mask is untested)
        self.verifies_drafts = (
            LOGITS_TO_KEEP in overridable and GROUP_QUERY_ATTENTION in info.graph_rewrites and self.device == "cpu"
        )
        #: tokens fed to a step after the first -> moving average of its seconds (what drafting costs)
        self.step_seconds: dict[int, float] = {}
        step_inputs = ["input_ids", "attention_mask", *(["position_ids"] if self.has_position_ids else [])]
        step_inputs += [LOGITS_TO_KEEP] if self.verifies_drafts else []
        self._feed_names = [*step_inputs, *(slot.past_name for slot in self.cache_slots)]
        self._ones = np.ones((1, info.context_length + 1), dtype=np.int64)
        log.info("loaded %s (%s) on %s in %.1fs", info.alias, info.onnx_path.name, self.provider, self.load_seconds)

    @classmethod
    def open(cls, path: Path | str, options: RuntimeOptions | None = None) -> OnnxCausalLM:
        """Open the export folder at `path`."""
        return cls(read_export(Path(path)), options)

    @property
    def context_length(self) -> int:
        return self.info.context_length

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.info.eos_token_ids

    def new_sequence(self) -> SequenceState:
        """An empty cache for one new sequence."""
        return SequenceState(self)

    def forward(self, state: SequenceState, token_ids: Sequence[int], logits_to_keep: int = 1) -> np.ndarray:
        """Feed `token_ids` after what `state` holds; return the last `logits_to_keep` positions' logits.

        The result is float32 [logits_to_keep, vocab]; more than one position needs `verifies_drafts`.
        """
        count = len(token_ids)
        total = state.length + count
        if count == 0 or total > self._ones.shape[1]:
            raise InferenceError(
                HF_INFERENCE_FAILED,
                f"cannot feed {count} tokens after {state.length}: the context holds {self.context_length}",
            )
        if not 1 <= logits_to_keep <= count or (logits_to_keep > 1 and not self.verifies_drafts):
            raise InferenceError(HF_INFERENCE_FAILED, f"cannot return {logits_to_keep} positions of {count}")
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, count)
        mask = self._mask(state, count)
        positions = np.arange(state.length, total, dtype=np.int64).reshape(1, count)
        started = time.perf_counter()
        try:
            if state.binding is None:
                logits = self._run_cpu(state, ids, mask, positions, logits_to_keep)
            else:
                logits = self._run_bound(state, ids, mask, positions)
        except Exception as exc:
            raise _run_error(exc) from exc
        if state.length and count <= MAX_LOOKAHEAD_TOKENS + 1:
            self._time_step(count, time.perf_counter() - started)
        state.length = total
        # a copy: the array may view memory the session owns and frees with the step's outputs
        return np.array(logits[0, -logits_to_keep:], dtype=np.float32)

    def step_cost(self, count: int) -> float:
        """The cost of a step over `count` tokens after the first step, in one-token steps (timed, or the prior)."""
        one, seconds = self.step_seconds.get(1), self.step_seconds.get(count)
        if one and seconds:
            return max(1.0, seconds / one)
        return 1.0 + STEP_COST_PRIOR * (count - 1)

    def _time_step(self, count: int, seconds: float) -> None:
        average = self.step_seconds.get(count)
        self.step_seconds[count] = seconds if average is None else average + _STEP_AVERAGING * (seconds - average)

    def rewind(self, state: SequenceState, length: int) -> None:
        """Keep only the first `length` positions of the cache (drop rejected drafts); needs `verifies_drafts`."""
        if not 0 <= length <= state.length or (length < state.length and not self.verifies_drafts):
            raise InferenceError(HF_INFERENCE_FAILED, f"cannot rewind a cache of {state.length} to {length}")
        state.length = length

    def _mask(self, state: SequenceState, count: int) -> np.ndarray:
        """The attention mask: its sum is the length read, its width the op's total sequence length.

        The op accepts a width equal to the cache's length plus `count` (it appends), or no more than the
        cache's length (it writes in place). After a rewind the cache is longer than `state.length`, so when
        the new tokens overflow it the mask keeps that width and ends in zeros (the op's right padding).
        """
        total = state.length + count
        cached = state.cache[0].shape()[2] if state.cache else state.length
        if cached <= state.length or total <= cached:
            return self._ones[:, :total]
        mask = np.zeros((1, cached + count), dtype=np.int64)
        mask[:, :total] = 1
        return mask

    def _run_cpu(
        self, state: SequenceState, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, logits_to_keep: int
    ) -> np.ndarray:
        feeds = _C.OrtValueVector()
        feeds.reserve(len(self._feed_names))
        feeds.push_back(_C.OrtValue.ortvalue_from_numpy(ids, _CPU_DEVICE))
        feeds.push_back(_C.OrtValue.ortvalue_from_numpy(mask, _CPU_DEVICE))
        if self.has_position_ids:
            feeds.push_back(_C.OrtValue.ortvalue_from_numpy(positions, _CPU_DEVICE))
        inputs = [ids, mask, positions]
        if self.verifies_drafts:
            inputs.append(np.array([logits_to_keep], dtype=np.int64))
            feeds.push_back(_C.OrtValue.ortvalue_from_numpy(inputs[-1], _CPU_DEVICE))
        for value in state.cache:
            feeds.push_back(value)
        state._inputs = tuple(inputs)
        outputs = _C.OrtValueVector()
        self.session.run_with_ortvaluevector(
            state.run_options, self._feed_names, feeds, self._fetch, outputs, self._fetch_devices
        )
        state.cache = [outputs[index] for index in range(1, len(self._fetch))]
        return outputs[0].numpy()

    def _run_bound(self, state: SequenceState, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> np.ndarray:
        binding = state.binding
        assert binding is not None
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        if self.has_position_ids:
            binding.bind_cpu_input("position_ids", positions)
        binding.bind_output("logits", "cpu")
        for slot in self.cache_slots:
            binding.bind_output(slot.present_name, self.device, self.options.device_id)
        self.session.run_with_iobinding(binding, state.run_options)
        outputs = binding.get_outputs()
        for slot, value in zip(self.cache_slots, outputs[1:], strict=True):
            binding.bind_ortvalue_input(slot.past_name, value)
        return outputs[0].numpy()

    def close(self) -> None:
        """Let go of the session (its memory returns once no sequence holds a cache from it)."""
        self.empty_cache = []
        del self.session

    def _empty(self, slot: CacheSlot) -> ort.OrtValue:
        zeros = np.zeros(slot.empty_shape, dtype=slot.dtype)
        return ort.OrtValue.ortvalue_from_numpy(zeros, self.device, self.options.device_id)


def _open_session(path: Path, options: RuntimeOptions, provider: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(path), session_options(options), providers=provider_list(provider, options.device_id)
        )
    except InferenceError:
        raise
    except MemoryError as exc:
        raise InferenceError(HF_MEMORY_ERROR, f"not enough memory to load {path}", {"path": str(path)}) from exc
    except Exception as exc:
        reason = _first_line(exc)
        code = HF_MEMORY_ERROR if _out_of_memory(exc, reason) else HF_MODEL_LOAD_FAILED
        raise InferenceError(code, f"cannot load {path}: {reason}", {"path": str(path)}) from exc


def _cache_slots(session: ort.InferenceSession) -> list[CacheSlot]:
    """Pair every `past_key_values.N.key/value` input with its `present.N.key/value` output."""
    outputs = {o.name for o in session.get_outputs()}
    if "logits" not in outputs or "input_ids" not in {i.name for i in session.get_inputs()}:
        raise InferenceError(HF_MODEL_LOAD_FAILED, "the graph has no input_ids input or no logits output")
    slots = []
    for node in session.get_inputs():
        match = _PAST.match(node.name)
        if not match:
            continue
        present = f"present.{match[1]}.{match[2]}"
        if present not in outputs:
            raise InferenceError(HF_MODEL_LOAD_FAILED, f"the graph has {node.name} but no {present} output")
        dtype = _ORT_TYPES.get(node.type)
        if dtype is None:
            raise InferenceError(HF_MODEL_LOAD_FAILED, f"unsupported cache type {node.type} for {node.name}")
        shape = tuple(_empty_dim(i, dim) for i, dim in enumerate(node.shape))
        slots.append(CacheSlot(node.name, present, shape, dtype))
    if not slots:
        raise InferenceError(
            HF_MODEL_LOAD_FAILED,
            "the graph has no past_key_values inputs: export it with task text-generation-with-past",
        )
    slots.sort(key=lambda s: (int(_PAST.match(s.past_name)[1]), s.past_name))  # type: ignore[index]
    return slots


def _empty_dim(index: int, dim: object) -> int:
    """Batch is 1 and the past length 0; fixed dimensions (heads, head size) come from the graph."""
    if isinstance(dim, int):
        return dim
    return 1 if index == 0 else 0


def _run_error(exc: Exception) -> InferenceError:
    text = _first_line(exc)
    if "terminate" in text.lower():
        return InferenceError(HF_CANCELLED, "the step was interrupted")
    if _out_of_memory(exc, text):
        return InferenceError(HF_MEMORY_ERROR, f"out of memory while generating: {text}")
    return InferenceError(HF_INFERENCE_FAILED, f"the model failed to run: {text}")


def _first_line(exc: Exception) -> str:
    """The first line of the message, or the exception's type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _out_of_memory(exc: Exception, text: str) -> bool:
    return isinstance(exc, MemoryError) or "bad_alloc" in text or "out of memory" in text.lower()
