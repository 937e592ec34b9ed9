"""What each candidate model of a turn is sent: its configured settings, the history that fits its own
context window, and the reply budget that is left. Built once per candidate, before anything is opened.

The chat turn and the stateless OpenAI-compatible completion both build their requests here: the history is
plain `ChatMessage`s (the turn's stored messages, or the messages a client sent), each with its images."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError
from app.providers.registry import Candidate
from app.providers.types import ChatMessage, ChatRequest, GenerationOptions, ModelInfo
from app.services.context import build_context
from app.services.prompts import DEFAULT_SYSTEM_PROMPT


class TurnRequests:
    """Builds the `ChatRequest` of each routed candidate from the published configuration."""

    def __init__(self, config: ConfigSource) -> None:
        self.config = config

    def for_candidates(
        self,
        candidates: Sequence[Candidate],
        history: Sequence[ChatMessage],
        current: ChatMessage,
        requested: GenerationOptions | None = None,
        system_prompt: str | None = None,
    ) -> list[Candidate]:
        """Every candidate with its request. The requested model's refusal is raised (nothing is saved yet);
        a fallback's is kept on it, so the registry counts it as that fallback failing to start. A name that
        did not route keeps its routing error. `system_prompt` (a client's own) goes over the configured one."""
        first, *fallbacks = candidates
        built = [
            first
            if first.error is not None
            else first.sending(self.build(first, history, current, requested, system_prompt))
        ]
        for candidate in fallbacks:
            if candidate.error is not None:
                built.append(candidate)
                continue
            try:
                built.append(candidate.sending(self.build(candidate, history, current, requested, system_prompt)))
            except ServiceError as exc:
                built.append(candidate.failing(exc))
        return built

    def build(
        self,
        candidate: Candidate,
        history: Sequence[ChatMessage],
        current: ChatMessage,
        requested: GenerationOptions | None = None,
        system_prompt: str | None = None,
    ) -> ChatRequest:
        """Raises MODEL_NOT_FOUND when the model is disabled in the configuration and CONTEXT_LENGTH_EXCEEDED
        when the system prompt and the current message alone do not fit."""
        name, info = candidate.asked, candidate.info
        settings = self.config.settings
        configured = self.config.current.for_model(name, info)
        if not configured.enabled:
            raise ServiceError(
                ErrorCode.MODEL_NOT_FOUND,
                f"Model {name} is disabled in the configuration",
                details={"model": name, "reason": "disabled"},
            )
        options = over(requested, configured.options or GenerationOptions())
        context_length = (info.context_length if info else None) or settings.chat_context_length
        if configured.context_budget:
            context_length = min(context_length, configured.context_budget)
        max_tokens = min(options.max_tokens or settings.chat_max_tokens, context_length // 2)
        context = build_context(
            system_prompt=(
                system_prompt
                if system_prompt is not None
                else configured.system_prompt or settings.system_prompt or DEFAULT_SYSTEM_PROMPT
            ),
            history=history,
            current=current,
            context_length=context_length,
            max_new_tokens=max_tokens,
            count_text=candidate.counter,
            image_tokens=image_tokens(info),
        )
        assert candidate.resolved is not None
        return ChatRequest(
            model=candidate.resolved.native_name,
            messages=context.messages,
            options=msgspec.structs.replace(options, max_tokens=max_tokens, context_length=context_length),
            keep_alive_s=configured.keep_alive_s,
        )


def over(requested: GenerationOptions | None, configured: GenerationOptions) -> GenerationOptions:
    """The request's options over the model's configured ones, option by option; what neither sets stays
    None, so the provider falls back to the model's own defaults and then to the service's."""
    if requested is None:
        return configured
    chosen = {
        field: value
        for field in requested.__struct_fields__
        if (value := getattr(requested, field)) is not None and value != []
    }
    return msgspec.structs.replace(configured, **chosen)


# what one image costs a vision model that does not say (LLaVA's 336-pixel CLIP tower: 576, plus margin)
DEFAULT_IMAGE_TOKENS = 768


def image_tokens(info: ModelInfo | None) -> int | None:
    """What one image costs this model's context, or None when it cannot see images (they are not sent)."""
    if info is None or not info.capabilities.vision:
        return None
    declared = info.metadata.get("imageTokens")
    return declared if isinstance(declared, int) and declared > 0 else DEFAULT_IMAGE_TOKENS
