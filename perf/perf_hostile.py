"""Hostile-mix benchmark: what the hostile corpus costs ordinary traffic through the gateway.

A fake upstream VLM and the gateway each run in their own process under uvicorn; the
gateway's rewriter is scripted (it answers from :mod:`vlmguard_plugins.hostile` after
``--rewriter-delay-ms``).  Ordinary clients send a question with a small PNG, alternating
between the gateway and the upstream directly, so the latency the gateway adds is
measured under the same load; a separate process fires every case of the hostile corpus
at the gateway, round-robin, during the "with the hostile mix" phases; a prober reads
``/healthz`` throughout.

Phases alternate (ordinary only, with the mix, with the mix, ordinary only, ...) and
every figure is the median over rounds of that round's value, never the best round.

Prints: the ordinary requests' p50/p99 latency added by the gateway with and without
the mix and their ratio, ``/healthz`` latency, the gateway's peak resident memory, the
statuses of the hostile requests (never a 500) and the slowest hostile case.

Run: .venv/bin/python perf/perf_hostile.py --quick   (about 30 s)
     .venv/bin/python perf/perf_hostile.py           (5 rounds of 10 s phases)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev environment
from perf_gateway import _free_port, _wait_healthy

MIB = 1024 * 1024


# -- the servers ----------------------------------------------------------------------------


def _serve_upstream(port: int) -> None:
    import uvicorn

    from vlmguard_plugins.testing import ChatCompletionServer

    upstream = ChatCompletionServer(
        chunks=["The ", "answer ", "is ", "safe."], model="fake-vlm", record=False
    )
    uvicorn.run(upstream.app, host="127.0.0.1", port=port, log_level="error")


class CorpusRewriterBackend:
    """A rewriter model that waits ``delay_s`` then answers from the hostile corpus.

    Unlike ``ScriptedBackend`` it keeps no record of its calls, which would hold every
    request (and its decoded images) in the gateway's memory for the whole run.
    """

    name = "corpus"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def agenerate(self, request: Any) -> Any:
        from vlmguard_plugins import Generation
        from vlmguard_plugins.hostile import responder

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Generation(text=responder(request))

    async def aclose(self) -> None:
        pass


def _serve_gateway(port: int, upstream_url: str, delay_s: float) -> None:
    import uvicorn

    from vlmguard_plugins import Rewriter, URLPolicy
    from vlmguard_plugins.hostile import metadata_resolver
    from vlmguard_plugins.server import GatewaySettings, create_app

    settings = GatewaySettings(upstream_url=upstream_url, port=port)
    # Remote images on, with every name resolving to the metadata address: the URL
    # cases then run the whole address check, and no lookup leaves the machine.
    rewriter = Rewriter(
        CorpusRewriterBackend(delay_s),
        max_concurrency=settings.rewriter_max_concurrency,
        url_policy=URLPolicy(allow_remote=True, resolver=metadata_resolver),
    )
    uvicorn.run(create_app(settings, rewriter), host="127.0.0.1", port=port, log_level="error")


# -- the hostile mix, in its own process ------------------------------------------------------


def _fire(
    url: str,
    bodies: list[tuple[str, bytes]],
    offset: int,
    go: Any,
    records: list[tuple[str, int, float]],
    lock: threading.Lock,
) -> None:
    """One attacker: send the corpus round-robin from ``offset`` while ``go`` is set."""
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=120) as client:
        index = offset
        while go.is_set():
            name, body = bodies[index % len(bodies)]
            index += 1
            started = time.perf_counter()
            try:
                status = client.post(url, content=body, headers=headers).status_code
            except httpx.HTTPError:
                status = 0  # the connection failed: counted, never hidden
            with lock:
                records.append((name, status, time.perf_counter() - started))


def _hostile_worker(
    gateway_url: str, clients: int, go: Any, stop: Any, results: Any, ready: Any
) -> None:
    """Fire the corpus at the gateway while ``go`` is set; one result list per phase."""
    from vlmguard_plugins.hostile import CASES

    bodies = [(case.name, case.build_body()) for case in CASES]  # built once, not timed
    ready.set()
    url = f"{gateway_url}/v1/chat/completions"
    while True:
        go.wait()
        if stop.is_set():
            return
        records: list[tuple[str, int, float]] = []
        lock = threading.Lock()
        threads = [
            threading.Thread(
                target=_fire, args=(url, bodies, i * len(bodies) // clients, go, records, lock)
            )
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results.put(records)


# -- ordinary traffic and the health prober ---------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    mixed: bool
    gateway_s: list[float] = field(default_factory=list)
    direct_s: list[float] = field(default_factory=list)
    healthz_s: list[float] = field(default_factory=list)
    errors: int = 0
    hostile: list[tuple[str, int, float]] = field(default_factory=list)


def _percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _ordinary_phase(
    gateway_url: str, upstream_url: str, clients: int, duration_s: float, phase: Phase
) -> None:
    from vlmguard_plugins.hostile import chat_body, ordinary_messages

    body = chat_body(ordinary_messages())
    headers = {"Content-Type": "application/json"}
    targets = (f"{gateway_url}/v1/chat/completions", f"{upstream_url}/chat/completions")
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def loop(first: int) -> None:
            turn = first
            while time.perf_counter() < deadline:
                through_gateway = turn % 2 == 0
                turn += 1
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        targets[0 if through_gateway else 1], content=body, headers=headers
                    )
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                if not ok:
                    phase.errors += 1
                elif through_gateway:
                    phase.gateway_s.append(elapsed)
                else:
                    phase.direct_s.append(elapsed)

        async def probe() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await client.get(f"{gateway_url}/healthz")
                    phase.healthz_s.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    phase.errors += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(probe(), *(loop(i) for i in range(clients)))


def _peak_rss(process: psutil.Process) -> int:
    """The process's peak resident memory (VmHWM) where Linux tells it, else its RSS now."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(process.memory_info().rss)


class _RSSSampler(threading.Thread):
    """Samples a process's RSS every 20 ms: the peak where VmHWM is not available."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, int(self.process.memory_info().rss))
            except psutil.Error:
                return
            time.sleep(0.02)


# -- the report ---------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def _round_figures(phase: Phase) -> dict[str, float]:
    return {
        "gateway p50": _percentile(phase.gateway_s, 50),
        "gateway p99": _percentile(phase.gateway_s, 99),
        "direct p50": _percentile(phase.direct_s, 50),
        "direct p99": _percentile(phase.direct_s, 99),
        "added p50": _percentile(phase.gateway_s, 50) - _percentile(phase.direct_s, 50),
        "added p99": _percentile(phase.gateway_s, 99) - _percentile(phase.direct_s, 99),
        "healthz p50": _percentile(phase.healthz_s, 50),
        "healthz p99": _percentile(phase.healthz_s, 99),
        "healthz max": max(phase.healthz_s, default=float("nan")),
        "ordinary requests": float(len(phase.gateway_s) + len(phase.direct_s)),
        "errors": float(phase.errors),
    }


def _medians(phases: list[Phase]) -> dict[str, float]:
    figures = [_round_figures(phase) for phase in phases]
    return {name: statistics.median(f[name] for f in figures) for name in figures[0]}


def _report(
    phases: list[Phase], rss: dict[str, int], args: argparse.Namespace, rounds: int
) -> None:
    quiet = _medians([p for p in phases if not p.mixed])
    mixed = _medians([p for p in phases if p.mixed])
    print(
        f"  {'median of ' + str(rounds) + ' rounds':24s} {'ordinary only':>14s} "
        f"{'with hostile mix':>17s} {'ratio':>7s}"
    )
    for name in (
        "added p50",
        "added p99",
        "gateway p50",
        "gateway p99",
        "direct p50",
        "direct p99",
        "healthz p50",
        "healthz p99",
        "healthz max",
    ):
        ratio = mixed[name] / quiet[name] if quiet[name] > 0 else float("nan")
        print(f"  {name:24s} {_ms(quiet[name]):>14s} {_ms(mixed[name]):>17s} {ratio:6.2f}x")
    print(
        f"  {'ordinary requests/phase':24s} {quiet['ordinary requests']:14.0f} "
        f"{mixed['ordinary requests']:17.0f}"
    )
    print(f"  {'ordinary errors/phase':24s} {quiet['errors']:14.0f} {mixed['errors']:17.0f}")
    print(
        f"  gateway RSS: {rss['start'] / MIB:.0f} MiB after warm-up, peak "
        f"{rss['quiet'] / MIB:.0f} MiB after the first ordinary-only phase, peak "
        f"{rss['end'] / MIB:.0f} MiB at the end (hostile mix included)"
    )
    hostile = [record for phase in phases for record in phase.hostile]
    statuses = Counter(status for _, status, _ in hostile)
    print(
        f"  hostile requests: {len(hostile)} in all, statuses "
        + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        + f"; 500s: {statuses.get(500, 0)}, failed connections: {statuses.get(0, 0)}"
    )
    by_case: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, status, elapsed in hostile:
        by_case[name].append((status, elapsed))
    if not hostile:
        return
    slowest = max(hostile, key=lambda record: record[2])
    print(f"  slowest hostile request: {slowest[0]} {slowest[2]:.3f} s (status {slowest[1]})")
    if args.per_case:
        print(f"  {'case':34s} {'sent':>5s} {'median':>10s} {'max':>10s}  statuses")
        for name, records in sorted(by_case.items(), key=lambda item: -max(s for _, s in item[1])):
            seconds = [s for _, s in records]
            codes = ",".join(str(c) for c in sorted({status for status, _ in records}))
            print(
                f"  {name:34s} {len(records):5d} {_ms(statistics.median(seconds)):>10s} "
                f"{_ms(max(seconds)):>10s}  {codes}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s phases (~30 s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each: both phases)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent ordinary clients")
    parser.add_argument("--hostile-clients", type=int, default=2, help="concurrent attackers")
    parser.add_argument("--rewriter-delay-ms", type=float, default=20.0)
    parser.add_argument("--per-case", action="store_true", help="print every hostile case")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.clients = 2, 4.0, 4

    context = multiprocessing.get_context("spawn")
    upstream_port, gateway_port = _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    go, stop, ready = context.Event(), context.Event(), context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=_serve_upstream, args=(upstream_port,), daemon=True),
        context.Process(
            target=_serve_gateway,
            args=(gateway_port, upstream_url, args.rewriter_delay_ms / 1000),
            daemon=True,
        ),
        context.Process(
            target=_hostile_worker,
            args=(gateway_url, args.hostile_clients, go, stop, results, ready),
            daemon=True,
        ),
    ]
    for process in processes:
        process.start()
    try:
        _wait_healthy(f"{upstream_url}/models")
        _wait_healthy(f"{gateway_url}/healthz")
        if not ready.wait(120):
            raise RuntimeError("the hostile client did not start")
        gateway = psutil.Process(processes[1].pid)
        sampler = _RSSSampler(gateway)
        sampler.start()
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"hostile-mix benchmark: {args.clients} ordinary clients (half of their requests "
            f"straight to the upstream), {args.hostile_clients} hostile clients cycling "
            f"through the corpus, rewriter delay {args.rewriter_delay_ms:.0f} ms; "
            f"{args.rounds} rounds x 2 phases x {args.duration:.0f} s; "
            f"{psutil.cpu_count()} CPUs, load average before {load}"
        )
        # Warm-up: connections, lazy imports, first-call costs on both paths.
        asyncio.run(_ordinary_phase(gateway_url, upstream_url, 2, 1.0, Phase(False)))
        rss = {"start": _peak_rss(gateway)}
        phases: list[Phase] = []
        order = [False, True] * args.rounds
        for index in range(args.rounds):  # A B, then B A: drift cancels out
            pair = order[2 * index : 2 * index + 2]
            for mixed in pair if index % 2 == 0 else pair[::-1]:
                phase = Phase(mixed)
                if mixed:
                    go.set()
                asyncio.run(
                    _ordinary_phase(gateway_url, upstream_url, args.clients, args.duration, phase)
                )
                if mixed:
                    go.clear()
                    phase.hostile = results.get(timeout=300)
                phases.append(phase)
                if not mixed and "quiet" not in rss:
                    rss["quiet"] = max(_peak_rss(gateway), sampler.peak)
        rss["end"] = max(_peak_rss(gateway), sampler.peak)
        sampler.running = False
        _report(phases, rss, args, args.rounds)
    finally:
        stop.set()
        go.set()
        for process in processes:
            if process is not processes[2]:
                process.terminate()
            process.join(timeout=30)


if __name__ == "__main__":
    main()
