"""`PoolSettings`: everything the `hf` model pool runs with, as one value (start-up, hot reload, provider)."""

from __future__ import annotations

from dataclasses import dataclass

from inference.execution import ProviderChoice, RuntimeOptions
from inference.scheduler import BatchLimits


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Sessions (provider, threads), memory (budget, model count, keep-alive, preload), batching and queueing,
    and the drafting policy the provider gives each generation."""

    execution_provider: ProviderChoice = "auto"
    num_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    lookahead_tokens: int = 4  # per generation (GenerationParams.lookahead_tokens); needs no new session
    memory_budget_bytes: int | None = None
    max_loaded_models: int = 0  # 0: no limit
    keep_alive_s: float | None = 300.0
    preload: tuple[str, ...] = ()
    max_batch_size: int = 8
    queue_length: int = 16
    queue_wait_s: float = 30.0
    prefix_cache_bytes: int = 512 * 2**20  # per model: saved turns and system prompts (0: none)

    @property
    def runtime_options(self) -> RuntimeOptions:
        """What a session is opened with; a change to it means loading the models again."""
        return RuntimeOptions(
            execution_provider=self.execution_provider,
            intra_op_num_threads=self.num_threads,
            inter_op_num_threads=self.inter_op_threads,
            graph_optimization=self.graph_optimization,
        )

    @property
    def batch_limits(self) -> BatchLimits:
        return BatchLimits(self.max_batch_size, self.queue_length, self.queue_wait_s, self.prefix_cache_bytes)
