"""Prometheus metrics of the gateway, on a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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
    ``vlmguard_gateway_requests_in_flight``: requests being served.
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
