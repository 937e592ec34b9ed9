"""Prometheus metrics: HTTP traffic, generations, latency and throughput, streams and provider health.

Counters and histograms are updated as things happen (an ASGI middleware for requests, a chat-turn
observer for generations); gauges that describe current state (active streams, provider health,
circuit state, loaded models) are read from the live objects when `/metrics` is scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.services.usage import UsageRecord
from inference.pool import PoolEvent

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
RATE_BUCKETS = (1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 400)
HEALTH_VALUES = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0, "unknown": -1.0}


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "beth_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "beth_http_request_duration_seconds", "Time to the response's first byte", ["route"], registry=self.registry
        )
        self.generations = Counter(
            "beth_generations", "Finished generations", ["provider", "model", "status"], registry=self.registry
        )
        self.generation_errors = Counter(
            "beth_generation_errors", "Generations that failed or stopped, by code", ["provider", "model", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "beth_tokens_generated", "Completion tokens generated", ["provider", "model"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "beth_prompt_tokens", "Prompt tokens processed", ["provider", "model"], registry=self.registry
        )
        self.first_token_seconds = Histogram(
            "beth_time_to_first_token_seconds", "Time to first token", ["provider", "model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.generation_seconds = Histogram(
            "beth_generation_duration_seconds", "Whole generation time", ["provider", "model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tokens_per_second = Histogram(
            "beth_tokens_per_second", "Completion tokens per second of a generation", ["provider", "model"],
            buckets=RATE_BUCKETS, registry=self.registry,
        )  # fmt: skip

        self.model_loads = Counter(
            "beth_model_loads", "hf model loads by outcome (loaded, load_failed)", ["model", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.model_load_seconds = Histogram(
            "beth_model_load_seconds", "Time to load an hf model", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.model_unloads = Counter(
            "beth_model_unloads", "hf models unloaded, by reason (idle, evicted, memory_pressure, requested, ...)",
            ["model", "reason"], registry=self.registry,
        )  # fmt: skip
        self.queue_wait_seconds = Histogram(
            "beth_model_queue_wait_seconds", "Time an hf request waited for a place in its model's batch", ["model"],
            buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry,
        )  # fmt: skip

    def observe_pool(self, event: PoolEvent) -> None:
        """The hf model pool's loads (and their time), unloads (and why: an eviction is `evicted`) and
        admissions to a model's batch (and their wait in its queue)."""
        model = f"hf/{event.alias}"
        if event.kind == "admitted":
            self.queue_wait_seconds.labels(model).observe(event.seconds or 0.0)
            return
        if event.kind == "unloaded":
            self.model_unloads.labels(model, event.reason or "unknown").inc()
            return
        self.model_loads.labels(model, event.kind).inc()
        if event.kind == "loaded" and event.seconds is not None:
            self.model_load_seconds.labels(model).observe(event.seconds)

    def observe_generation(self, record: UsageRecord) -> None:
        labels = (record.provider, record.model)
        self.generations.labels(*labels, record.status).inc()
        if record.error_code:
            self.generation_errors.labels(*labels, record.error_code).inc()
        self.tokens.labels(*labels).inc(record.completion_tokens)
        self.prompt_tokens.labels(*labels).inc(record.prompt_tokens)
        if record.time_to_first_token_ms is not None:
            self.first_token_seconds.labels(*labels).observe(record.time_to_first_token_ms / 1000)
        if record.duration_ms:
            self.generation_seconds.labels(*labels).observe(record.duration_ms / 1000)
            if record.completion_tokens:
                self.tokens_per_second.labels(*labels).observe(record.completion_tokens / (record.duration_ms / 1000))

    def watch(self, read_state: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        """Register gauges computed at scrape time from the live objects."""
        self.registry.register(_StateCollector(read_state))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count every HTTP request by route template and status (never by raw path: ids would explode)."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = {"code": 500}

            async def capture(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    route = _route(scope)
                    self.request_seconds.labels(route).observe(time.perf_counter() - started)
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                self.requests.labels(scope.get("method", ""), _route(scope), str(status["code"])).inc()

        return wrapped


def _route(scope: Scope) -> str:
    template: Any = scope.get("path_template")
    return str(template) if template else "unmatched"


class _StateCollector(Collector):
    def __init__(self, read_state: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self.read_state = read_state

    def collect(self) -> Iterable[Any]:
        return list(self.read_state())


def state_gauges(sessions: Any, monitor: Any, registry: Any, guard: Any) -> Iterable[GaugeMetricFamily]:
    """Active streams, provider health and circuit state, and loaded models, read from the live services."""
    streams = GaugeMetricFamily("beth_active_streams", "Replies being generated by this process")
    streams.add_metric([], len(sessions.live))
    yield streams
    if monitor is not None:
        health = GaugeMetricFamily(
            "beth_provider_health", "1 healthy, 0.5 degraded, 0 unhealthy, -1 unknown", labels=["provider"]
        )
        for name, result in monitor.all_latest().items():
            health.add_metric([name], HEALTH_VALUES.get(result.status, -1.0))
        yield health
    if guard is not None:
        memory = GaugeMetricFamily("beth_memory_bytes", "Process resident and system available memory", labels=["kind"])
        if guard.last.process_rss_bytes is not None:
            memory.add_metric(["process_rss"], guard.last.process_rss_bytes)
        if guard.last.system_available_bytes is not None:
            memory.add_metric(["system_available"], guard.last.system_available_bytes)
        if guard.pool is not None:
            memory.add_metric(["models_loaded"], guard.pool.used_bytes)
            loaded = GaugeMetricFamily("beth_models_loaded", "hf models in memory", labels=["model"])
            batch = GaugeMetricFamily("beth_model_batch", "hf generations running in a model's batch", labels=["model"])
            queue = GaugeMetricFamily(
                "beth_model_queue_length", "hf requests waiting for a model's batch", labels=["model"]
            )
            for model in guard.pool.loaded():
                loaded.add_metric([f"hf/{model.alias}"], model.size_bytes)
                batch.add_metric([f"hf/{model.alias}"], model.running)
                queue.add_metric([f"hf/{model.alias}"], model.queued)
            yield loaded
            yield batch
            yield queue
        yield memory
        unloads = CounterMetricFamily("beth_memory_pressure_unloads", "Idle models unloaded under memory pressure")
        unloads.add_metric([], guard.pressure_unloads)
        yield unloads
    if registry is not None:
        circuit = GaugeMetricFamily(
            "beth_provider_circuit_open", "1 while the provider's circuit is open", labels=["provider"]
        )
        for provider in registry.providers:
            circuit.add_metric([provider.name], 1.0 if registry.breaker(provider.name).state == "open" else 0.0)
        yield circuit
