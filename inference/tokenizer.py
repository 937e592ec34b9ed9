"""Tokenizer, chat template and streaming detokenizer for one export folder, without transformers.

The chat template is rendered the way transformers' `apply_chat_template` does it (sandboxed jinja2 with
`trim_blocks`, `lstrip_blocks`, `loopcontrols`, `raise_exception`, `strftime_now`, a `tojson` that keeps
non-ASCII text) and the result is encoded without adding special tokens, so prompt token counts match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from inference.errors import HF_CONFIGURATION_ERROR, HF_MODEL_LOAD_FAILED, HF_TOKENIZATION_ERROR, InferenceError

Message = dict[str, Any]
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` (used to mark assistant text for training): render the body."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's own class attribute)

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class TokenStream:
    """Incremental detokenizer: feed ids one at a time, get text that never ends inside a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """The text this token completes (often empty while a multi-byte character is still partial)."""
        return self._stream.step(self._tokenizer, token_id) or ""


class ChatTokenizer:
    """The folder's `tokenizer.json`, its special tokens and its chat template."""

    def __init__(self, folder: Path) -> None:
        path = folder / "tokenizer.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise InferenceError(
                HF_MODEL_LOAD_FAILED, f"cannot read the tokenizer {path}: {exc}", {"path": str(path)}
            ) from exc
        config = _read_json(folder / "tokenizer_config.json")
        self.special_tokens = {key: _token_text(config.get(key)) for key in _SPECIAL_KEYS}
        self.chat_template = _chat_template(folder, config)
        #: ids of the added and special tokens (the chat template's markers): never part of a message's text
        self.special_ids = frozenset(self.tokenizer.get_added_tokens_decoder())
        self._compiled: jinja2.Template | None = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        try:
            return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        except Exception as exc:
            raise InferenceError(HF_TOKENIZATION_ERROR, f"cannot tokenize the text: {exc}") from exc

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def stream(self) -> TokenStream:
        return TokenStream(self.tokenizer)

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text for `messages`, ending with the assistant's turn opening."""
        if not self.chat_template:
            raise InferenceError(
                HF_CONFIGURATION_ERROR, "this model has no chat template; export a chat (instruct) model"
            )
        if self._compiled is None:
            self._compiled = _environment().from_string(self.chat_template)
        context = {**self.special_tokens, **extra}
        try:
            return self._compiled.render(
                messages=list(messages), add_generation_prompt=add_generation_prompt, **context
            )
        except jinja2.exceptions.TemplateError as exc:
            raise InferenceError(HF_TOKENIZATION_ERROR, f"the chat template rejected the messages: {exc}") from exc

    def encode_chat(self, messages: Sequence[Message], **extra: Any) -> list[int]:
        """Token ids of the rendered chat prompt (special tokens come from the template itself)."""
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise InferenceError(HF_TOKENIZATION_ERROR, "every message needs a role and a content")
        return self.encode(self.render_chat(messages, **extra))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    """`chat_template.jinja` wins (newer transformers), else the config's string or its "default" entry."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None
