"""Model names: splitting a prefix off, and the closest known names for a name that matched nothing.

A prefix is the provider's name and a slash (`hf/`, `ollama/`, `openai/`). Ollama's own names may hold
slashes (`library/llama3`, `hf.co/user/repo:Q4_K_M`), so only the reserved prefixes below ever split a name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: prefixes that always mean a provider, even when that provider is not configured (so `openai/x`
#: fails clearly instead of reaching Ollama as a model called `openai/x`)
RESERVED_PREFIXES: tuple[str, ...] = ("hf/", "ollama/", "openai/")


def split_prefix(name: str, prefixes: Iterable[str]) -> tuple[str | None, str]:
    """(`prefix`, native name) for a name with one of `prefixes`, else (None, the name unchanged)."""
    for prefix in prefixes:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix, name[len(prefix) :]
    return None, name


def closest_names(query: str, names: Iterable[str], limit: int = 5) -> list[str]:
    """Known names that contain `query` (ignoring case) first, then the most similar ones (difflib)."""
    candidates = list(dict.fromkeys(names))
    needle = query.strip().lower()
    if not needle:
        return candidates[:limit]
    contained = [n for n in candidates if needle in n.lower()]
    lowered = {n.lower(): n for n in candidates}
    similar = [lowered[n] for n in difflib.get_close_matches(needle, list(lowered), n=limit, cutoff=0.5)]
    # also compare against the name without its prefix, so `smollm2` finds `hf/SmolLM2-135M-Instruct`
    bare = {n.rsplit("/", 1)[-1].lower(): n for n in candidates}
    similar += [bare[n] for n in difflib.get_close_matches(needle, list(bare), n=limit, cutoff=0.5)]
    return list(dict.fromkeys([*contained, *similar]))[:limit]


def matches(query: str, native_name: str, full_name: str) -> bool:
    """Search: a case-insensitive substring or a close spelling of the model's own name; a query that
    holds a `/` is matched against the full name too (so `hf/smol` works, but `llama` does not match
    every `ollama/...` model)."""
    needle = query.strip().lower()
    if not needle:
        return True
    texts = [native_name.lower()] + ([full_name.lower()] if "/" in needle else [])
    return any(needle in text or difflib.SequenceMatcher(None, needle, text).ratio() >= 0.75 for text in texts)
