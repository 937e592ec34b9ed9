"""`Generator`: the state of one generation, advanced one step at a time by the caller's loop.

The shape follows ONNX Runtime GenAI: `append_tokens` queues input, `generate_next_tokens` runs the model on
what is queued and picks the next token, `is_done` says when to stop. The model runs lazily at the start of the
next step, so the step that picks the last token costs no wasted forward pass, and the scheduler gathers the
one queued token of several generators into one batched step (`decode_input` / `take_logits`).

Drafting is this generator's policy (`GenerationParams.lookahead_tokens`): a step it runs alone on a graph
that can check drafts (`OnnxCausalLM.verifies_drafts`) also feeds the tokens that `PromptLookup` expects
next, and keeps the drafted tokens that the sampler picks anyway at their positions, plus the sampler's own
token after them: several tokens for the price of about one step (inference/lookahead.py). A batched step
checks no drafts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np

from inference.errors import HF_CONTEXT_LENGTH_EXCEEDED, HF_INFERENCE_FAILED, InferenceError
from inference.lookahead import PromptLookup, StepCosts
from inference.model import OnnxCausalLM, SequenceState
from inference.params import GenerationParams
from inference.sampling import Sampler
from inference.vision import ImageEmbeds

FinishReason = Literal["stop", "length", "cancelled", "timeout"]


class Generator:
    """One sequence: its cache, its sampler, the tokens so far and why it finished."""

    def __init__(self, model: OnnxCausalLM, params: GenerationParams, step_costs: StepCosts | None = None) -> None:
        self.model = model
        self.params = params
        self.stop_token_ids = frozenset(model.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids)
        self.sampler = Sampler(params)
        #: the cache: a row the scheduler hands over (`attach`), else one of its own made at the first step
        self.state: SequenceState | None = None
        self._closed = False
        self.step_costs = step_costs or StepCosts()
        self.prompt_length = 0
        self.generated: list[int] = []
        self.finish_reason: FinishReason | None = None
        self._pending: list[int] = []
        self._history = np.empty(model.context_length + 1, dtype=np.int64)
        self._history_length = 0
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        drafts = params.lookahead_tokens if model.verifies_drafts else 0
        self.lookup = PromptLookup(drafts) if drafts else None
        self.accepted_tokens = 0  # drafted tokens kept
        #: the prompt's image features by position (a vision-language export's prompt with images)
        self.images: ImageEmbeds | None = None

    @property
    def reuses_prefix(self) -> bool:
        """Whether saved prefixes may stand for this prompt: not with images, whose token ids do not tell
        one image from another."""
        return self.images is None

    def append_tokens(self, token_ids: Sequence[int]) -> None:
        """Queue prompt tokens; refuse them when they and `max_new_tokens` cannot fit the context."""
        if self.generated or self.finish_reason:
            raise InferenceError(HF_INFERENCE_FAILED, "append_tokens after generation started is not supported")
        self._check_fits(self._history_length + len(token_ids))
        self._remember(token_ids)
        self._pending.extend(token_ids)
        self.prompt_length = self._history_length

    def reword_prompt(self, token_ids: Sequence[int]) -> None:
        """Queue `token_ids` instead of the prompt: the same text in other tokens (a saved turn's own), before
        the first step; refused like `append_tokens` when they cannot fit."""
        if self.generated or self.state is not None or len(self._pending) != self._history_length:
            raise InferenceError(HF_INFERENCE_FAILED, "the prompt can be reworded only before the first step")
        self._check_fits(len(token_ids))
        self._history_length, self._pending = 0, []
        if self.lookup is not None:
            self.lookup = PromptLookup(self.lookup.max_tokens)
        self.append_tokens(token_ids)

    def _check_fits(self, prompt_tokens: int) -> None:
        if prompt_tokens + self.params.max_new_tokens > self.model.context_length:
            raise InferenceError(
                HF_CONTEXT_LENGTH_EXCEEDED,
                f"the prompt has {prompt_tokens} tokens and up to {self.params.max_new_tokens} new tokens were "
                f"asked for, but the model's context holds {self.model.context_length}; shorten the conversation "
                "or ask for fewer tokens",
                {
                    "prompt_tokens": prompt_tokens,
                    "max_new_tokens": self.params.max_new_tokens,
                    "context_length": self.model.context_length,
                },
            )

    def attach(self, state: SequenceState) -> None:
        """Use `state` (a row of the scheduler's cache) instead of a cache of its own; before the first step."""
        self.state = state

    def skip_prompt(self, count: int) -> None:
        """The attached cache already holds the first `count` prompt tokens (a saved prefix): feed the rest."""
        if self.generated or count >= len(self._pending):
            raise InferenceError(HF_INFERENCE_FAILED, f"cannot skip {count} of {len(self._pending)} prompt tokens")
        del self._pending[:count]

    def token_ids(self, count: int) -> np.ndarray:
        """The first `count` tokens of the sequence (prompt, then generated), as the cache positions hold them."""
        return self._history[: min(count, self._history_length)].copy()

    @property
    def pending(self) -> int:
        """Tokens queued for the next step (1 while decoding, more while the prompt is fed)."""
        return len(self._pending)

    def prefill_step(self, max_tokens: int) -> bool:
        """Feed up to `max_tokens` of a long queued prompt without picking a token; False when none is left.

        A long prompt in pieces lets a scheduler interleave other requests' steps and check cancellation
        between the pieces; the last piece (at most `max_tokens`) is left for `generate_next_tokens`.
        """
        state = self._state()
        if state is None or len(self._pending) <= max_tokens:
            return False
        self.model.forward(state, self._pending[:max_tokens], **self._image_args())
        del self._pending[:max_tokens]
        return True

    def decode_input(self) -> int:
        """The one token the next step feeds, for a batched step (`take_logits` then takes its logits)."""
        if len(self._pending) != 1 or self.is_done():
            raise InferenceError(HF_INFERENCE_FAILED, "only a decoding generation joins a batched step")
        return self._pending[0]

    def take_logits(self, scores: np.ndarray) -> list[int]:
        """A batched step fed `decode_input()` at this cache's end: advance the cache, pick the next token."""
        state = self._state()
        if state is None:
            raise InferenceError(HF_INFERENCE_FAILED, "the generation has already finished")
        state.length += 1
        token = self.sampler.choose(scores, self._history[: self._history_length])
        self._accept(token)
        return [token]

    def generate_next_tokens(self) -> list[int]:
        """Run the model on the queued tokens (and a draft, if any); return the tokens picked, at least one.

        The last token returned is queued for the next step; the generation is done once a stop token is
        picked or `max_new_tokens` are reached, and nothing after that is returned.
        """
        if self.is_done():
            raise InferenceError(HF_INFERENCE_FAILED, "the generation has already finished")
        state = self._state()
        if not self._pending or state is None:
            raise InferenceError(HF_INFERENCE_FAILED, "append_tokens must give a prompt first")
        draft = self._draft()
        fed = len(self._pending) + len(draft)
        timed = state.length > 0  # a prompt's step is not what a draft costs
        started = time.perf_counter()
        logits = self.model.forward(state, self._pending + draft, logits_to_keep=len(draft) + 1, **self._image_args())
        if timed:
            self.step_costs.record(fed, time.perf_counter() - started)
        picked: list[int] = []
        kept = 0  # drafted tokens kept
        for position, scores in enumerate(logits):
            offered = draft[position] if position < len(draft) else None
            token = self.sampler.choose(scores, self._history[: self._history_length])
            picked.append(token)
            self._accept(token)
            if token != offered:
                break
            kept += 1
            if self.is_done():
                break
        if draft and self.lookup is not None:
            self.accepted_tokens += kept
            self.lookup.record(len(draft), kept)
            if self.state is not None:
                self.model.rewind(state, self._history_length - 1)  # the newest token is fed next step
        return picked

    def _image_args(self) -> dict[str, ImageEmbeds]:
        """`images` for `forward` when the prompt has some; a text prompt's steps are called as before."""
        return {"images": self.images} if self.images is not None else {}

    def _draft(self) -> list[int]:
        """The tokens to check after the queued one: none while prefilling, or without a lookup."""
        if self.lookup is None or len(self._pending) != 1:
            return []
        return self.lookup.draft(self.params.max_new_tokens - len(self.generated) - 1, self.step_costs.cost)

    def _accept(self, token: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated.append(token)
        self._remember((token,))
        self._pending = [token]
        if token in self.stop_token_ids:
            self.finish("stop")
        elif len(self.generated) >= self.params.max_new_tokens:
            self.finish("length")

    def is_done(self) -> bool:
        return self.finish_reason is not None

    def finish(self, reason: FinishReason, unused_tokens: int = 0) -> None:
        """End the generation now (stop string, cancellation, timeout) and free its cache.

        `unused_tokens`: how many of the last generated tokens the caller did not use (tokens of the same
        step after a stop string); they are dropped from `generated`.
        """
        if unused_tokens:
            del self.generated[len(self.generated) - unused_tokens :]
        if self.finish_reason is None:
            self.finish_reason = reason
            self.finished_at = time.perf_counter()
        self.close()

    def close(self) -> None:
        self._closed = True
        if self.state is not None:
            self.state.release()
            self.state = None

    def _state(self) -> SequenceState | None:
        if self.state is None and not self._closed:
            self.state = self.model.new_sequence()
        return self.state

    def interrupt(self) -> None:
        """Stop a step that is running in another thread (a long prefill) as soon as ONNX Runtime can."""
        state = self.state
        if state is not None:
            state.interrupt()

    def _remember(self, token_ids: Sequence[int]) -> None:
        end = self._history_length + len(token_ids)
        self._history[self._history_length : end] = token_ids
        self._history_length = end
        if self.lookup is not None:
            self.lookup.extend(token_ids)
