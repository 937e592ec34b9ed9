"""`OnnxCausalLM`: one decoder graph with a key-value cache, run one step at a time for one or many sequences.

The graph itself says which `past_key_values.N.key/value` input pairs with which `present.N.key/value`
output, whether it wants `position_ids`, and the cache's shape and type; nothing is guessed from the model
family.

Graphs exported with GroupQueryAttention (see exports/) keep their cache in a `SlotCache`
(inference/kv_slots.py): one preallocated row per sequence, bound as both past and present, so a step
appends in place and several sequences of different lengths share one step (`forward_rows`), each row read
up to its own length (the attention mask's sum per row). The op takes several new tokens per row only for a
batch of one, so prompt pieces and drafted tokens run one sequence at a time; one-token steps batch. Graphs
that project only the last positions onto the vocabulary (`logits_to_keep`, an initializer that I/O binding
cannot feed) are opened keeping enough positions for the longest draft, so these graphs also check drafted
tokens: `forward` returns the logits of the last `logits_to_keep` positions, and `rewind` forgets the
positions of rejected drafts (the next steps overwrite them).

Other graphs append to a cache that each step returns (the present outputs fed back as the next past), one
sequence per step. Both run through ONNX Runtime's public I/O binding, on CPU or CUDA; under CUDA the rows
live on the device and only the logits come back to the host. CUDA graphs are not used: a captured graph
needs fixed shapes and addresses, and the batch's row count and the rows' length change between rounds.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.errors import (
    HF_CANCELLED,
    HF_INFERENCE_FAILED,
    HF_MEMORY_ERROR,
    HF_MODEL_LOAD_FAILED,
    InferenceError,
)
from inference.execution import (
    CUDA,
    RuntimeOptions,
    describe_choice,
    provider_list,
    resolve_provider,
    session_options,
)
from inference.export_folder import ExportInfo, read_export
from inference.kv_slots import CacheLayout, SlotCache
from inference.lookahead import MAX_LOOKAHEAD_TOKENS
from inference.vision import ImageEmbeds, VisionEncoder

log = logging.getLogger(__name__)

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
LOGITS_TO_KEEP = "logits_to_keep"
# exports/optimize.py's names for the rewrites whose attention reads each cache row up to the mask's sum
# only, and whose logits cover only the last `logits_to_keep` positions
GROUP_QUERY_ATTENTION = "group-query-attention"
LAST_POSITION_LOGITS = "last-position-logits"


@dataclass(frozen=True, slots=True)
class CacheSlot:
    """One cache tensor: the past input, the present output that refills it, and its empty shape."""

    past_name: str
    present_name: str
    empty_shape: tuple[int, ...]
    dtype: type


class SequenceState:
    """The cache of one sequence: a row of a `SlotCache`, or (other graphs) the OrtValues of its last step.

    Owned by one generator and released at its end; `length` counts the positions that are read (after a
    `rewind` a row holds more, which the next steps overwrite).
    """

    def __init__(self, model: OnnxCausalLM, slots: SlotCache | None = None, row: int = 0) -> None:
        self.model = model
        self.length = 0
        self.run_options = ort.RunOptions()
        self.slots = slots
        self.row = row
        self.cache: list[ort.OrtValue] = []  # graphs without slots: the present outputs of the last step
        if slots is None and not model.batches:
            self.cache = list(model.empty_cache)

    def release(self) -> None:
        """Drop the cache now rather than when the garbage collector gets to it."""
        self.cache = []
        self.slots = None

    def interrupt(self) -> None:
        """Ask a running step to stop early (used for cancellation during a long prefill)."""
        self.run_options.terminate = True


class OnnxCausalLM:
    """An export folder opened for generation: the session, its cache layout, and the steps."""

    def __init__(self, info: ExportInfo, options: RuntimeOptions | None = None) -> None:
        self.info = info
        self.options = options or RuntimeOptions()
        self.provider = resolve_provider(self.options.execution_provider, self.options.device_id)
        self.provider_note = describe_choice(self.options.execution_provider, self.provider)
        started = time.perf_counter()
        #: keeps the value of `logits_to_keep` alive as long as the session that reads it
        self._kept_positions = ort.OrtValue.ortvalue_from_numpy(np.array([MAX_LOOKAHEAD_TOKENS + 1], dtype=np.int64))
        keeps_positions = LAST_POSITION_LOGITS in info.graph_rewrites
        self.session = _open_session(
            info.onnx_path, self.options, self.provider, self._kept_positions if keeps_positions else None
        )
        self.load_seconds = time.perf_counter() - started
        self.device = "cuda" if self.provider == CUDA else "cpu"
        self.cache_slots = _cache_slots(self.session)
        self.has_position_ids = any(i.name == "position_ids" for i in self.session.get_inputs())
        #: a vision-language decoder reads embeddings (`inputs_embeds`), looked up here from token ids
        self.takes_embeds = any(i.name == "inputs_embeds" for i in self.session.get_inputs())
        self.vision = self._open_vision() if info.vision is not None else None
        if self.takes_embeds and self.vision is None:
            raise InferenceError(HF_MODEL_LOAD_FAILED, "the graph takes inputs_embeds but the export has no vision")
        #: whether several sequences share a step, each in a row of a `SlotCache`
        self.batches = GROUP_QUERY_ATTENTION in info.graph_rewrites and self.has_position_ids
        self.empty_cache = [] if self.batches else [self._empty(slot) for slot in self.cache_slots]
        #: whether `forward` can return several positions' logits and `rewind` drop positions (CPU only:
        #: the CUDA op's several-token steps after a cache are untested)
        self.verifies_drafts = keeps_positions and self.batches and self.device == "cpu"
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

    def slot_cache(self, rows: int) -> SlotCache:
        """Key-value rows for up to `rows` sequences that step together (graphs that `batches` only)."""
        layouts = [
            CacheLayout(slot.past_name, slot.present_name, slot.empty_shape[1], slot.empty_shape[3], slot.dtype)
            for slot in self.cache_slots
        ]
        return SlotCache(layouts, rows, self.context_length, self.device, self.options.device_id)

    def new_sequence(self, slots: SlotCache | None = None, row: int = 0) -> SequenceState:
        """An empty cache for one new sequence: row `row` of `slots`, or a cache of its own."""
        if slots is None and self.batches:
            slots = self.slot_cache(1)
        return SequenceState(self, slots, row)

    def _open_vision(self) -> VisionEncoder:
        assert self.info.vision is not None
        providers = provider_list(self.provider, self.options.device_id)
        return VisionEncoder(self.info.path, self.info.vision, session_options(self.options), providers)

    def forward(
        self,
        state: SequenceState,
        token_ids: Sequence[int],
        logits_to_keep: int = 1,
        images: ImageEmbeds | None = None,
    ) -> np.ndarray:
        """Feed `token_ids` after what `state` holds; return the last `logits_to_keep` positions' logits.

        The result is float32 [logits_to_keep, vocab]; more than one position needs `verifies_drafts`.
        `images`: the features that replace the embeddings at the prompt's image positions.
        """
        count = len(token_ids)
        if count == 0 or state.length + count > self.context_length + 1:
            raise InferenceError(
                HF_INFERENCE_FAILED,
                f"cannot feed {count} tokens after {state.length}: the context holds {self.context_length}",
            )
        if not 1 <= logits_to_keep <= count or (logits_to_keep > 1 and not self.verifies_drafts):
            raise InferenceError(HF_INFERENCE_FAILED, f"cannot return {logits_to_keep} positions of {count}")
        if state.slots is not None:
            logits = self.forward_rows(
                state.slots, state.row, [list(token_ids)], [state.length], logits_to_keep, state.run_options, images
            )
        else:
            logits = self._run_appending(state, token_ids, images)
        state.length += count
        return logits[0, -logits_to_keep:]

    def forward_rows(
        self,
        slots: SlotCache,
        first: int,
        token_ids: Sequence[Sequence[int]],
        lengths: Sequence[int],
        logits_to_keep: int = 1,
        run_options: ort.RunOptions | None = None,
        images: ImageEmbeds | None = None,
    ) -> np.ndarray:
        """One step over rows `[first, first + len(lengths))` of `slots`: row i holds `lengths[i]` positions and
        takes `token_ids[i]`; returns float32 [rows, logits_to_keep, vocab]. Lengths are not advanced here.

        Several rows take one token each; a single row may take several (a prompt piece, a draft).
        """
        rows = len(lengths)
        count = len(token_ids[0])
        if rows > 1 and count != 1:
            raise InferenceError(HF_INFERENCE_FAILED, "a step over several sequences takes one token each")
        slots.reserve(min(self.context_length, max(lengths) + count + 1))
        # a one-token step is wider than one (decoding, each row at its own length); a piece is exactly as wide
        # as what it fills (the op's first-prompt mode when nothing is cached)
        width = slots.length if count == 1 else lengths[0] + count
        mask = np.zeros((rows, width), dtype=np.int64)
        for row, length in enumerate(lengths):
            mask[row, : length + count] = 1
        ids = np.asarray(token_ids, dtype=np.int64).reshape(rows, count)
        positions = np.asarray(lengths, dtype=np.int64).reshape(rows, 1) + np.arange(count, dtype=np.int64)
        binding = self.session.io_binding()
        binding.bind_output("logits", "cpu")  # first: `get_outputs` follows the binding order
        fed = self._bind_tokens(binding, ids, lengths[0], images)  # bound by address: kept alive until the run
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_cpu_input("position_ids", positions)
        slots.bind(binding, first, rows)
        try:
            self.session.run_with_iobinding(binding, run_options)
        except Exception as exc:
            raise _run_error(exc) from exc
        del fed
        slots.wrote(first, [length + count for length in lengths])
        logits = binding.get_outputs()[0].numpy()
        return np.array(logits[:, -logits_to_keep:], dtype=np.float32)

    def rewind(self, state: SequenceState, length: int) -> None:
        """Keep only the first `length` positions of the cache (drop rejected drafts); needs `verifies_drafts`."""
        if not 0 <= length <= state.length or (length < state.length and not self.verifies_drafts):
            raise InferenceError(HF_INFERENCE_FAILED, f"cannot rewind a cache of {state.length} to {length}")
        state.length = length

    def _bind_tokens(
        self, binding: ort.IOBinding, ids: np.ndarray, first: int, images: ImageEmbeds | None
    ) -> np.ndarray:
        """Bind `input_ids`, or their embeddings with the images' features at their positions (one row with
        images); return the bound array, which the caller keeps alive until the run."""
        if not self.takes_embeds:
            binding.bind_cpu_input("input_ids", ids)
            return ids
        assert self.vision is not None
        embeds = self.vision.embed(ids.reshape(-1)).reshape(*ids.shape, -1)
        if images is not None:
            for offset, rows in images.overrides(first, ids.shape[1]):
                embeds[0, offset : offset + len(rows)] = rows
        embeds = np.ascontiguousarray(embeds)
        binding.bind_cpu_input("inputs_embeds", embeds)
        return embeds

    def _run_appending(
        self, state: SequenceState, token_ids: Sequence[int], images: ImageEmbeds | None = None
    ) -> np.ndarray:
        """One step of a graph without slots: the past goes in, the longer present comes back."""
        count = len(token_ids)
        binding = self.session.io_binding()
        binding.bind_output("logits", "cpu")
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, count)
        fed = self._bind_tokens(binding, ids, state.length, images)  # noqa: F841 - alive until the run
        binding.bind_cpu_input("attention_mask", np.ones((1, state.length + count), dtype=np.int64))
        if self.has_position_ids:
            positions = np.arange(state.length, state.length + count, dtype=np.int64).reshape(1, count)
            binding.bind_cpu_input("position_ids", positions)
        for slot, value in zip(self.cache_slots, state.cache, strict=True):
            binding.bind_ortvalue_input(slot.past_name, value)
            binding.bind_output(slot.present_name, self.device, self.options.device_id)
        try:
            self.session.run_with_iobinding(binding, state.run_options)
        except Exception as exc:
            raise _run_error(exc) from exc
        outputs = binding.get_outputs()
        state.cache = list(outputs[1:])
        return np.array(outputs[0].numpy()[:, -1:], dtype=np.float32)

    def close(self) -> None:
        """Let go of the session (its memory returns once no sequence holds a cache from it)."""
        self.empty_cache = []
        del self.session

    def _empty(self, slot: CacheSlot) -> ort.OrtValue:
        zeros = np.zeros(slot.empty_shape, dtype=slot.dtype)
        return ort.OrtValue.ortvalue_from_numpy(zeros, self.device, self.options.device_id)


def _open_session(
    path: Path, options: RuntimeOptions, provider: str, logits_to_keep: ort.OrtValue | None
) -> ort.InferenceSession:
    try:
        settings = session_options(options)
        if logits_to_keep is not None:
            settings.add_initializer(LOGITS_TO_KEEP, logits_to_keep)
        return ort.InferenceSession(str(path), settings, providers=provider_list(provider, options.device_id))
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
    if "logits" not in outputs or not {"input_ids", "inputs_embeds"} & {i.name for i in session.get_inputs()}:
        raise InferenceError(HF_MODEL_LOAD_FAILED, "the graph has no input_ids (or inputs_embeds) or no logits output")
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
