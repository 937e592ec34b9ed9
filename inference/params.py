"""`GenerationParams`: the search options of one request, validated where they are made."""

from __future__ import annotations

from dataclasses import dataclass

from inference.errors import HF_CONFIGURATION_ERROR, InferenceError
from inference.lookahead import MAX_LOOKAHEAD_TOKENS


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """How to pick tokens, when to stop, and how far to draft.

    `temperature=0` is greedy decoding. `stop_token_ids=None` means the model's own end-of-sequence ids (all
    of the generation config's); an empty tuple generates until `max_new_tokens` (benchmarks). Stop strings end
    generation and are never part of the text.
    """

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    seed: int | None = None
    stop_token_ids: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] = ()
    #: drafted tokens a step may check (prompt lookup, inference/lookahead.py) where the graph can; 0: off
    lookahead_tokens: int = 4

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be 0 (greedy) or more, not {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be 0 (off) or more, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], not {self.top_p}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be positive, not {self.repetition_penalty}")
        if not 0 <= self.lookahead_tokens <= MAX_LOOKAHEAD_TOKENS:
            problems.append(
                f"lookahead_tokens must be between 0 (off) and {MAX_LOOKAHEAD_TOKENS}, not {self.lookahead_tokens}"
            )
        if problems:
            raise InferenceError(HF_CONFIGURATION_ERROR, "; ".join(problems), {"params": repr(self)})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
