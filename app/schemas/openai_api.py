"""msgspec Structs of the OpenAI-compatible API (`/v1`): OpenAI's wire shapes and names (snake_case).

Requests accept the fields OpenAI clients commonly send; fields this API does not know are ignored. A field
that asks for something this API does not do (`n` above 1, tools, log probabilities, a JSON response format,
a logit bias, frequency or presence penalties) is refused with a clear 400 rather than silently ignored.
The option bounds are the REST API's (`ReplyOptions`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from app.errors import ErrorCode, ServiceError
from app.providers.types import GenerationOptions, ModelInfo
from app.schemas.boundary import MessageText, RequiredName
from app.schemas.conversations import MaxTokens, RepetitionPenalty, Seed, StopText, StopTexts, Temperature, TopK, TopP
from app.services.completions import CompletionRequest, PromptMessage
from app.services.images import Upload, encoded_upload

# -- requests ---------------------------------------------------------------------------------------------------


class TextPart(msgspec.Struct, tag_field="type", tag="text"):
    text: MessageText


class ImageUrl(msgspec.Struct):
    #: a `data:image/...;base64,` URL; nothing is fetched, so other URLs are refused
    url: str
    detail: str | None = None


class ImageUrlPart(msgspec.Struct, tag_field="type", tag="image_url"):
    image_url: ImageUrl


ContentPart = TextPart | ImageUrlPart


class Message(msgspec.Struct, kw_only=True):
    """One message of the conversation the client sends (`developer` is OpenAI's newer name for `system`)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: MessageText | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ResponseFormat(msgspec.Struct):
    type: str = "text"


Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: RequiredName
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    stop: StopText | StopTexts | None = None
    seed: Seed | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    n: int | None = None
    # extensions, as vLLM takes them: the engine's own sampling options
    top_k: TopK | None = None
    repetition_penalty: RepetitionPenalty | None = None
    # accepted while they ask for nothing (null, false, empty, the default)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: ResponseFormat | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def as_completion(self) -> CompletionRequest:
        """The service's request; INVALID_REQUEST (naming the field) for what this API does not do."""
        self._refuse_unsupported()
        return CompletionRequest(
            model=self.model,
            messages=tuple(_prompt_message(message, index) for index, message in enumerate(self.messages)),
            options=self.generation_options(),
        )

    def generation_options(self) -> GenerationOptions:
        """`max_completion_tokens` over `max_tokens` (OpenAI's newer name); `stop` as a list."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationOptions(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop=stop,
        )

    def _refuse_unsupported(self) -> None:
        if self.n not in (None, 1):
            raise _refused("n", "Only n=1 is supported: one choice per request")
        for field in ("frequency_penalty", "presence_penalty"):
            if getattr(self, field) not in (None, 0):
                raise _refused(
                    field,
                    f"{field} is not supported (only 0): OpenAI's additive penalties have no equivalent in this "
                    "service's engines; use repetition_penalty (e.g. 1.1) to discourage repeats",
                )
        if self.tools or self.functions:
            raise _refused("tools" if self.tools else "functions", "Tools and function calling are not supported")
        if self.logprobs or self.top_logprobs:
            raise _refused("logprobs", "Log probabilities are not supported")
        if self.logit_bias:
            raise _refused("logit_bias", "logit_bias is not supported")
        if self.response_format is not None and self.response_format.type != "text":
            raise _refused("response_format", "Only the text response format is supported")


def _refused(field: str, message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_REQUEST, message, details={"field": field})


def _prompt_message(message: Message, index: int) -> PromptMessage:
    where = f"messages[{index}]"
    if message.role in ("tool", "function") or message.tool_calls:
        raise _refused(where, "Tool messages and tool calls are not supported: this API does not call tools")
    role: Literal["system", "user", "assistant"] = "system" if message.role == "developer" else message.role
    content = message.content
    if content is None:
        raise _refused(f"{where}.content", "A message needs content")
    if isinstance(content, str):
        return PromptMessage(role=role, text=content)
    texts: list[str] = []
    uploads: list[Upload] = []
    for number, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        field = f"{where}.content[{number}].image_url.url"
        if role != "user":
            raise _refused(field, "Images go in user messages only")
        if not part.image_url.url.startswith("data:"):
            raise _refused(field, "Images are taken as data: URLs only (data:image/png;base64,...); nothing is fetched")
        try:
            uploads.append(encoded_upload(part.image_url.url, len(uploads)))
        except ServiceError as exc:
            raise _refused(field, exc.message) from None
    return PromptMessage(role=role, text="\n".join(texts), uploads=tuple(uploads))


# -- responses --------------------------------------------------------------------------------------------------


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class AssistantMessage(msgspec.Struct):
    content: str
    role: Literal["assistant"] = "assistant"
    refusal: None = None


class Choice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None


class ModelCard(msgspec.Struct):
    """A model as OpenAI lists it: `id` is the full name (`hf/<alias>`, `ollama/<name>`), `owned_by` its provider.
    Beyond OpenAI's fields (clients ignore others), `context_length` and `capabilities` (`text`, `vision`) describe
    the model to a service that uses this one as an OpenAI-compatible upstream, as vLLM's `max_model_len` does."""

    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"
    context_length: int | None = None
    capabilities: list[str] = msgspec.field(default_factory=list)

    @classmethod
    def of(cls, model: ModelInfo) -> ModelCard:
        seen = model.capabilities
        return cls(
            id=model.name,
            created=_epoch_s(model.metadata),
            owned_by=model.provider,
            context_length=model.context_length,
            capabilities=[name for name, has in (("text", seen.text), ("vision", seen.vision)) if has],
        )


def _epoch_s(metadata: dict[str, object]) -> int:
    """When the model was made (an export's `createdAt`, an Ollama model's `modifiedAt`); 0 when unknown."""
    for key in ("createdAt", "modifiedAt"):
        value = metadata.get(key)
        if isinstance(value, str):
            try:
                # Ollama writes nanoseconds; Python reads microseconds at most
                return int(
                    datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")).timestamp()
                )
            except ValueError:
                continue
    return 0


class ModelCardList(msgspec.Struct):
    data: list[ModelCard]
    object: Literal["list"] = "list"


class OpenAIError(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(msgspec.Struct):
    error: OpenAIError
