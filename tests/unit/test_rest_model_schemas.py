"""The REST model and provider shapes write the same JSON as the provider types they are copied from."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from app.providers.types import Capabilities, CircuitStatus, ModelInfo, ProviderHealth, ProviderStatus
from app.schemas.models import Health, Model, Provider


def json_of(value: object) -> object:
    return msgspec.json.decode(msgspec.json.encode(value))


def test_a_model_with_every_field_set_is_written_as_the_provider_wrote_it() -> None:
    info = ModelInfo(
        name="hf/tiny",
        provider="hf",
        native_name="tiny",
        display_name="Tiny",
        family="llama",
        parameter_size="135M",
        quantization="int4",
        context_length=2048,
        capabilities=Capabilities(text=True, vision=True, streaming=False),
        loaded=True,
        size_bytes=123_456,
        metadata={"dtype": "fp16", "layers": 30},
    )
    assert json_of(Model.of(info)) == json_of(info)
    bare = ModelInfo(name="ollama/x", provider="ollama", native_name="x")
    assert json_of(Model.of(bare)) == json_of(bare)


def test_a_provider_is_written_as_the_catalog_wrote_it() -> None:
    health = ProviderHealth(
        status="degraded", latency_ms=12.5, detail="slow", checked_at=datetime(2026, 12, 3, tzinfo=UTC)
    )
    status = ProviderStatus(
        name="ollama",
        prefix="ollama/",
        health=health,
        circuit=CircuitStatus(state="half_open", consecutive_failures=3, retry_in_s=4.0),
        model_count=7,
        listing_error="timed out",
        stale=True,
    )
    assert json_of(Provider.of(status)) == json_of(status)
    assert json_of(Health.of(health)) == json_of(health)
