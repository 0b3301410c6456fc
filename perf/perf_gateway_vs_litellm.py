"""The vlmguard gateway vs the LiteLLM proxy, both in front of the same fake upstream.

Targets, each a separate process (or process group) on loopback:

- ``direct``: the fake upstream VLM itself (streams of ``--chunks`` pieces, one every
  ``--chunk-interval-ms``), from perf_gateway.py;
- ``gateway-1w`` / ``gateway-2w``: ``vlmguard serve --rewriter-backend scripted`` with
  1 and 2 workers (the whole guard: conversation, image decode, scripted rewrite);
- ``litellm``: ``litellm --config`` with a no-op ``pre_call`` guardrail (the proxy's own
  cost with a guardrail hook in the path, no rewriting), run without a master key.

For each round, every concurrency level and every target run one phase (the order of
the targets rotates from round to round, so slow drift in the machine's load spreads
over all of them); the figures printed are medians over the rounds of each phase's
first-chunk p50/p99 and completed streams per second, then the ratios to ``direct``,
then each server's CPU time per stream.  The load generator is perf_gateway.py's
(every request a text and a small PNG, streamed).

Run: .venv/bin/python perf/perf_gateway_vs_litellm.py                     (3 rounds, 10 s)
     .venv/bin/python perf/perf_gateway_vs_litellm.py --rounds 2 --duration 4  (a quick look)
Needs the litellm-vlmguard package (``make install``) for its proxy launcher.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# Set before anything imports litellm (the proxy and the spawned client processes):
# otherwise it tries to download its model cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import psutil  # noqa: E402
from perf_gateway import (  # noqa: E402
    PhaseResult,
    _free_port,
    _percentile,
    _run_phase,
    _serve_upstream,
    _wait_healthy,
)

if TYPE_CHECKING:
    from litellm_vlmguard.testing import LiteLLMProxy

UPSTREAM_MODEL = "fake-vlm"
"""The model perf_gateway's requests name; the proxy serves the upstream under it."""

NOOP_GUARDRAIL = '''
from litellm.integrations.custom_guardrail import CustomGuardrail


class NoOpGuardrail(CustomGuardrail):
    """A pre_call guardrail that returns the request as it came."""

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data
'''


@dataclass
class Target:
    """One server under test: where to send the streams, and which processes to meter."""

    name: str
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's process and all its children."""
        root = psutil.Process(self.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


@dataclass
class Sample:
    """What one phase measured."""

    first_p50_s: float
    first_p99_s: float
    streams_per_s: float
    cpu_per_stream_s: float
    failed: int


@dataclass
class Table:
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)

    def add(self, target: str, clients: int, sample: Sample) -> None:
        self.samples.setdefault((target, clients), []).append(sample)

    def median(self, target: str, clients: int, value: Callable[[Sample], float]) -> float:
        return statistics.median(value(s) for s in self.samples[(target, clients)])


def _phase(target: Target, clients: int, args: argparse.Namespace) -> Sample:
    cpu_before = target.cpu_seconds()
    result: PhaseResult = _run_phase(
        target.url, clients, args.duration, args.chunks, args.client_procs
    )
    cpu_used = target.cpu_seconds() - cpu_before
    completed = len(result.first_chunk_s)
    return Sample(
        first_p50_s=_percentile(result.first_chunk_s, 50),
        first_p99_s=_percentile(result.first_chunk_s, 99),
        streams_per_s=completed / args.duration,
        cpu_per_stream_s=cpu_used / max(completed, 1),
        failed=result.errors + result.incomplete,
    )


def _start_gateway(upstream_url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("vlmguard")),
        "serve",
        "--upstream",
        upstream_url,
        "--rewriter-backend",
        "scripted",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(f"{url}/healthz", timeout_s=120)
    return process, f"{url}/v1/chat/completions"


def _start_litellm(upstream_url: str, workdir: Path) -> LiteLLMProxy:
    # Imported here: the client processes import this module and need no LiteLLM.
    from litellm_vlmguard.testing import LiteLLMProxy, vlm_model_entry

    (workdir / "noop_guardrail.py").write_text(NOOP_GUARDRAIL)
    config = {
        "model_list": [vlm_model_entry(UPSTREAM_MODEL, upstream_url, UPSTREAM_MODEL)],
        "guardrails": [
            {
                "guardrail_name": "noop",
                "litellm_params": {
                    "guardrail": "noop_guardrail.NoOpGuardrail",
                    "mode": "pre_call",
                    "default_on": True,
                },
            }
        ],
    }
    return LiteLLMProxy(config, workdir=workdir, master_key=None).start()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def _report(table: Table, targets: list[str], levels: list[int]) -> None:
    print("\nmedians over rounds: first-chunk p50 / p99 (ms), completed streams/s, failed")
    for clients in levels:
        print(f"  {clients} concurrent streams")
        for name in targets:
            p50 = table.median(name, clients, lambda s: s.first_p50_s)
            p99 = table.median(name, clients, lambda s: s.first_p99_s)
            rate = table.median(name, clients, lambda s: s.streams_per_s)
            failed = sum(s.failed for s in table.samples[(name, clients)])
            print(f"    {name:11s} {_ms(p50)} / {_ms(p99)}  {rate:7.1f}/s  failed {failed}")
    print("\nratios to direct (medians): first-chunk p50, p99 (x); streams/s (x)")
    for clients in levels:
        base_p50 = table.median("direct", clients, lambda s: s.first_p50_s)
        base_p99 = table.median("direct", clients, lambda s: s.first_p99_s)
        base_rate = table.median("direct", clients, lambda s: s.streams_per_s)
        for name in targets[1:]:
            p50 = table.median(name, clients, lambda s: s.first_p50_s) / base_p50
            p99 = table.median(name, clients, lambda s: s.first_p99_s) / base_p99
            rate = table.median(name, clients, lambda s: s.streams_per_s) / base_rate
            print(f"  {clients:4d} streams {name:11s} {p50:6.2f}  {p99:6.2f}  {rate:6.2f}")
    print("\nserver CPU per completed stream (ms, median over rounds; processes and children)")
    for name in targets:
        cells = "  ".join(
            f"{clients}: {_ms(table.median(name, clients, lambda s: s.cpu_per_stream_s))}"
            for clients in levels
        )
        print(f"  {name:11s} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument(
        "--levels", default="1,10,20,200", help="concurrent streams, comma-separated"
    )
    parser.add_argument("--chunks", type=int, default=20, help="content pieces per stream")
    parser.add_argument("--chunk-interval-ms", type=float, default=50.0)
    parser.add_argument("--client-procs", type=int, default=2, help="processes making the load")
    parser.add_argument(
        "--targets",
        default="direct,gateway-1w,gateway-2w,litellm",
        help="which targets to run, comma-separated",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    wanted = args.targets.split(",")

    context = multiprocessing.get_context("spawn")
    upstream_port = _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    upstream = context.Process(
        target=_serve_upstream,
        args=(upstream_port, args.chunks, args.chunk_interval_ms / 1000),
        daemon=True,
    )
    upstream.start()
    gateways: list[subprocess.Popen[bytes]] = []
    proxy: LiteLLMProxy | None = None
    workdir = Path(tempfile.mkdtemp(prefix="perf-litellm-"))
    try:
        _wait_healthy(f"{upstream_url}/models")
        assert upstream.pid is not None
        targets = [Target("direct", f"{upstream_url}/chat/completions", upstream.pid)]
        for workers in (1, 2):
            name = f"gateway-{workers}w"
            if name in wanted:
                process, url = _start_gateway(upstream_url, workers)
                gateways.append(process)
                targets.append(Target(name, url, process.pid))
        if "litellm" in wanted:
            proxy = _start_litellm(upstream_url, workdir)
            assert proxy.process is not None
            targets.append(
                Target("litellm", f"{proxy.base_url}/chat/completions", proxy.process.pid)
            )

        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"gateway vs LiteLLM: {args.rounds} rounds x {len(levels)} levels x "
            f"{len(targets)} targets, {args.duration:.0f} s per phase, streams of "
            f"{args.chunks} chunks every {args.chunk_interval_ms:.0f} ms, "
            f"{args.client_procs} client processes; {psutil.cpu_count()} CPUs, "
            f"load average before the run {load}"
        )
        for target in targets:  # warm connections, imports and first-call costs
            _run_phase(target.url, 4, 2, args.chunks, 1)

        table = Table()
        for round_index in range(args.rounds):
            order = targets[round_index % len(targets) :] + targets[: round_index % len(targets)]
            for clients in levels:
                for target in order:
                    sample = _phase(target, clients, args)
                    table.add(target.name, clients, sample)
                    print(
                        f"  round {round_index + 1} {clients:4d} streams {target.name:11s} "
                        f"first chunk p50 {_ms(sample.first_p50_s)} ms, "
                        f"{sample.streams_per_s:6.1f} streams/s, failed {sample.failed}",
                        flush=True,
                    )
        _report(table, [target.name for target in targets], levels)
    finally:
        if proxy is not None:
            proxy.stop()
        for process in gateways:
            process.terminate()
            process.wait(timeout=30)
        upstream.terminate()
        upstream.join(timeout=30)


if __name__ == "__main__":
    main()
