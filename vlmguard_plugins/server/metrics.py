"""Prometheus metrics of the gateway, on a registry of its own (one per app)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..speculative import SpeculationStats
from ..types import RewriteResult

# Rewrites take tens of milliseconds to seconds; the upstream up to minutes.
REWRITE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    """The gateway's counters and histograms.

    ``vlmguard_gateway_requests_total{endpoint,status}``: answered requests;
    ``vlmguard_gateway_rewrites_total{risk,action}``: guard decisions;
    ``vlmguard_gateway_fallbacks_total{policy,reason}``: failure-policy results;
    ``vlmguard_gateway_dropped_parts_total``: message parts removed under
    ``unsupported_content="drop"`` (no label: part types are client-controlled, so
    they would make an unbounded label);
    ``vlmguard_gateway_upstream_errors_total{kind}``: upstream failures;
    ``vlmguard_gateway_rewrite_seconds`` and ``vlmguard_gateway_upstream_seconds``
    (until the upstream's response headers): latency histograms;
    ``vlmguard_gateway_requests_in_flight``: requests being served;
    ``vlmguard_gateway_shadow_decisions_total{risk,action}``: what the guard would have
    done in shadow mode (``skipped`` past the shadow limit, ``cancelled`` at shutdown);
    ``vlmguard_gateway_speculative_hits_total``, ``..._misses_total`` and
    ``..._wasted_upstream_calls_total``: speculative mode's outcomes (read from the
    :class:`~vlmguard_plugins.speculative.SpeculationStats` given to
    :meth:`watch_speculation`);
    ``vlmguard_gateway_audit_errors_total``: audit lines that could not be written.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vlmguard_gateway_requests",
            "Requests answered by the gateway.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.rewrites = Counter(
            "vlmguard_gateway_rewrites",
            "Guard decisions on chat requests, by risk level and action.",
            ["risk", "action"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "vlmguard_gateway_fallbacks",
            "Requests the failure policy handled, by policy and error.",
            ["policy", "reason"],
            registry=self.registry,
        )
        self.dropped_parts = Counter(
            "vlmguard_gateway_dropped_parts",
            "Message parts the guard cannot check, removed before forwarding (drop setting).",
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "vlmguard_gateway_upstream_errors",
            "Upstream failures: connect, timeout, status_<code>, stream.",
            ["kind"],
            registry=self.registry,
        )
        self.rewrite_seconds = Histogram(
            "vlmguard_gateway_rewrite_seconds",
            "Time the rewriter took per chat request.",
            buckets=REWRITE_BUCKETS,
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "vlmguard_gateway_upstream_seconds",
            "Time until the upstream's response headers (whole answer when not streaming).",
            ["stream"],
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "vlmguard_gateway_requests_in_flight",
            "Requests being served, streams included.",
            registry=self.registry,
        )
        self.shadow_decisions = Counter(
            "vlmguard_gateway_shadow_decisions",
            "Shadow mode: what the guard would have done, by risk level and action.",
            ["risk", "action"],
            registry=self.registry,
        )
        self.audit_errors = Counter(
            "vlmguard_gateway_audit_errors",
            "Audit log lines that could not be written.",
            registry=self.registry,
        )

    def watch_speculation(self, stats: SpeculationStats) -> None:
        """Expose ``stats`` (speculative hits, misses, wasted upstream calls) as counters."""
        self.registry.register(_SpeculationCollector(stats))

    def record_rewrite(self, result: RewriteResult, policy: str, seconds: float) -> None:
        """Count one guard decision and its latency."""
        self.rewrite_seconds.observe(seconds)
        self.rewrites.labels(risk=result.risk_label, action=result.action).inc()
        if result.fallback is not None:
            reason = result.fallback.split(":", 1)[0]
            self.fallbacks.labels(policy=policy, reason=reason).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _SpeculationCollector(Collector):
    """Reads the speculation counters at scrape time: the stats object stays the one record."""

    def __init__(self, stats: SpeculationStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "vlmguard_gateway_speculative_hits",
            "Speculative mode: original answers released (the guard left the request as is).",
            value=self.stats.hits,
        )
        yield CounterMetricFamily(
            "vlmguard_gateway_speculative_misses",
            "Speculative mode: original answers replaced by the answer to the guarded request.",
            value=self.stats.misses,
        )
        yield CounterMetricFamily(
            "vlmguard_gateway_speculative_wasted_upstream_calls",
            "Speculative mode: upstream calls on the original request cancelled or discarded.",
            value=self.stats.wasted_calls,
        )


__all__ = ["REWRITE_BUCKETS", "UPSTREAM_BUCKETS", "GatewayMetrics"]
