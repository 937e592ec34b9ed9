"""Warm-up: load each provider's first model with a one-token "Hello", so the first real reply is fast.

Behind the old `warmupOllama` mutation, which never throws: failures are reported in the answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from app.errors import ServiceError
from app.providers.registry import ProviderRegistry
from app.providers.types import ChatMessage, ChatRequest, GenerationOptions
from app.services.catalog import ModelCatalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmupReport:
    models: list[str]
    warmed: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


async def warm_up(catalog: ModelCatalog, registry: ProviderRegistry) -> WarmupReport:
    """Warm the first listed model of every provider; never raises."""
    try:
        listed = await catalog.models()
    except Exception as exc:
        log.warning("warm-up could not list models: %s", exc)
        return WarmupReport(models=[], failures={"*": str(exc)})
    firsts: dict[str, str] = {}
    for model in listed:
        firsts.setdefault(model.provider, model.name)
    report = WarmupReport(models=await catalog.available_model_names())
    for name in firsts.values():
        request = ChatRequest(
            model=name,
            messages=[ChatMessage(role="user", content="Hello")],
            options=GenerationOptions(max_tokens=1),
            timeout_s=120,
        )
        try:
            candidates = [c if c.error else c.sending(request) for c in await registry.candidates(name)]
            stream = await registry.open_chat_stream(candidates)
            await stream.aclose()
            report.warmed.append(name)
        except ServiceError as exc:
            report.failures[name] = exc.message
        except Exception as exc:  # warm-up must never take the caller down
            log.warning("warm-up of %s failed", name, exc_info=exc)
            report.failures[name] = str(exc) or type(exc).__name__
    return report
