"""Every hostile input of the corpus against every entry point, with bounds on time and memory.

The corpus (:mod:`vlmguard_plugins.hostile`) documents the outcome each case is owed;
this file holds each entry point to it:

* the core: ``Rewriter.aguard`` (a typed ``InputError``, or a result) and
  ``Rewriter.arewrite`` under ``shield`` (a failure-policy result: ``risk is None``
  and a ``fallback`` reason);
* the gateway over HTTP on loopback, in front of a fake upstream: the status and the
  error code, never a 500, and nothing forwarded when the input is refused;
* the LangChain adapter, ``VLMGuardRewriter | ParrotFakeChatModel``: the typed error,
  or what the chat model received.

Every case must finish within its ``max_seconds`` (5 s): a bound on stalls, not a
speed test.  The image cases that could exhaust memory run in forked child processes
(one per case and entry point), whose peak resident memory is read with ``getrusage``
and must grow by less than ``max_rss_growth_mb`` (400 MB); a child is also capped at
3 GiB of address space so a missing defence fails the test instead of the machine.

The scripted rewriter answers from the corpus (``hostile.responder``); its URL policy
allows remote images, with a resolver that answers the metadata address for every
name, so the address checks are exercised without any lookup leaving the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from vlmguard_plugins import Rewriter, URLPolicy, shield_prompt
from vlmguard_plugins.conversation import from_openai
from vlmguard_plugins.errors import InputError
from vlmguard_plugins.hostile import (
    BOMB_SIDE,
    CASES,
    CASES_BY_NAME,
    SAFE_REWRITE,
    HostileCase,
    animated_gif,
    metadata_resolver,
    near_limit_bombs,
    one_colour_png,
    one_colour_webp,
    responder,
)
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, run_in_thread

HTTP_TIMEOUT_S = 30.0
"""Past this a stalled gateway fails the test instead of hanging it."""

CHILD_DEADLINE_S = 60.0
"""A child process still running after this is killed and its case fails."""

CHILD_ADDRESS_SPACE_BYTES = 3 * 1024**3
"""Address space a child may add to what it inherited: a bomb that gets decoded fails
with MemoryError instead of taking the shared machine's memory."""

MEASURED = [case for case in CASES if case.max_rss_growth_mb is not None]
IN_PROCESS = [case for case in CASES if case.max_rss_growth_mb is None]


def build_rewriter() -> Rewriter:
    """The rewriter every entry point uses: corpus answers, remote images allowed."""
    return Rewriter(
        ScriptedBackend(responder=responder),
        on_error="shield",
        url_policy=URLPolicy(allow_remote=True, resolver=metadata_resolver),
    )


def ids(case: HostileCase) -> str:
    return case.name


# -- the outcome each entry point owes -------------------------------------------------


def check_guarded(case: HostileCase, outcome: dict[str, Any], entry: str) -> None:
    """``outcome`` of ``aguard`` or ``arewrite`` (``entry``) against the documented one."""
    if outcome.get("crash"):
        pytest.fail(f"{case.name}: crashed at {entry} instead of answering:\n{outcome['crash']}")
    if case.outcome == "refused" and entry == "aguard":
        assert case.error is not None
        assert "error" in outcome, (
            f"{case.name}: aguard returned a result (risk {outcome['risk']}, action "
            f"{outcome['action']}) instead of raising {case.error.__name__}"
        )
        assert case.error.__name__ in outcome["error"], (
            f"{case.name}: expected {case.error.__name__}, got {outcome['error'][0]}: "
            f"{outcome.get('message')}"
        )
        assert "InputError" in outcome["error"]
        return
    assert "error" not in outcome, (
        f"{case.name}: {outcome['error'][0]} raised at {entry} for a case owed a result: "
        f"{outcome.get('message')}"
    )
    if case.outcome == "answered":
        assert outcome["risk"] is not None and outcome["fallback"] is None, (case.name, outcome)
        if case.prompt is not None:
            assert outcome["prompt"] == case.prompt
    else:  # refused input under arewrite, or a rewriter answer that is unusable
        assert outcome["risk"] is None, (
            f"{case.name}: {entry} gave a verdict (risk {outcome['risk']}, action "
            f"{outcome['action']}) where a failure-policy result is owed"
        )
        assert outcome["fallback"], (case.name, outcome)
        assert outcome["action"] == "shield"


def result_outcome(result: Any) -> dict[str, Any]:
    return {
        "risk": None if result.risk is None else result.risk.value,
        "fallback": result.fallback,
        "action": result.action,
        "prompt": result.prompt,
    }


def error_outcome(exc: BaseException) -> dict[str, Any]:
    return {"error": [cls.__name__ for cls in type(exc).__mro__], "message": str(exc)[:300]}


async def guard_outcome(rewriter: Rewriter, messages: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        guarded = await rewriter.aguard(from_openai(messages))
    except InputError as exc:
        return error_outcome(exc)
    assert guarded.result is not None
    return result_outcome(guarded.result)


async def direct_outcome(rewriter: Rewriter, text: str, images: list[str]) -> dict[str, Any]:
    result = await rewriter.arewrite(text, images=images, on_error="shield")
    outcome = result_outcome(result)
    if result.risk is None:
        assert result.prompt == shield_prompt(text)
    return outcome


def check_within(case: HostileCase, seconds: float, where: str) -> None:
    assert seconds < case.max_seconds, (
        f"{case.name} took {seconds:.2f} s at {where}, over its {case.max_seconds} s bound"
    )


# -- the core ------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in IN_PROCESS if c.core], ids=ids)
async def test_core_guard_answers_each_case_as_documented(case: HostileCase) -> None:
    rewriter = build_rewriter()
    messages = case.build_messages()
    started = time.perf_counter()
    outcome = await guard_outcome(rewriter, messages)
    elapsed = time.perf_counter() - started
    check_guarded(case, outcome, "aguard")
    check_within(case, elapsed, "Rewriter.aguard")


@pytest.mark.parametrize("case", [c for c in IN_PROCESS if c.core and c.direct], ids=ids)
async def test_core_rewrite_under_shield_never_fails_open(case: HostileCase) -> None:
    rewriter = build_rewriter()
    text, images = case.direct_request()
    started = time.perf_counter()
    outcome = await direct_outcome(rewriter, text, images)
    elapsed = time.perf_counter() - started
    check_guarded(case, outcome, "arewrite")
    check_within(case, elapsed, "Rewriter.arewrite")


# -- the LangChain adapter -----------------------------------------------------------


def _reply_text(reply: Any) -> str:
    content = reply.content
    if isinstance(content, str):
        return content
    return "\n".join(
        block["text"]
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )


@pytest.mark.parametrize("case", [c for c in IN_PROCESS if c.core], ids=ids)
async def test_langchain_guard_answers_each_case_as_documented(case: HostileCase) -> None:
    # The adapter is a separate distribution: without it installed there is nothing to run.
    langchain_vlmguard = pytest.importorskip("langchain_vlmguard")
    from langchain_core.language_models import ParrotFakeChatModel
    from langchain_core.messages import convert_to_messages

    chain = langchain_vlmguard.VLMGuardRewriter(rewriter=build_rewriter()) | ParrotFakeChatModel()
    messages = convert_to_messages(case.build_messages())
    started = time.perf_counter()
    if case.outcome == "refused":
        assert case.error is not None
        with pytest.raises(case.error):
            await chain.ainvoke(messages)
    else:
        # The parrot echoes what the VLM would have received.
        received = _reply_text(await chain.ainvoke(messages))
        shielded = received.startswith(shield_prompt("")[:40])
        assert shielded == (case.outcome == "fallback"), (case.name, received[:200])
        if case.prompt is not None:
            assert received == case.prompt
    check_within(case, time.perf_counter() - started, "VLMGuardRewriter")


# -- the gateway ---------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    upstream: ChatCompletionServer
    client: httpx.Client


@contextlib.contextmanager
def served_gateway() -> Iterator[Gateway]:
    """The gateway in front of a fake upstream, each served on loopback in a thread."""
    upstream = ChatCompletionServer(chunks=["The ", "answer ", "is ", "safe."], model="fake-vlm")
    with run_in_thread(upstream.app) as upstream_url:
        settings = GatewaySettings(upstream_url=f"{upstream_url}/v1", expose_analysis=True)
        app = create_app(settings, rewriter=build_rewriter())
        with run_in_thread(app) as url, httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            yield Gateway(url, upstream, client)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with served_gateway() as served:
        yield served


def post(gw: Gateway, case: HostileCase) -> tuple[httpx.Response, float]:
    body = case.build_body()
    started = time.perf_counter()
    answer = gw.client.post(
        f"{gw.url}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    return answer, time.perf_counter() - started


def gateway_outcome(answer: httpx.Response) -> dict[str, Any]:
    try:
        payload = answer.json()
    except ValueError:
        payload = {}
    error = payload.get("error") if isinstance(payload, dict) else None
    report = payload.get("vlmguard") if isinstance(payload, dict) else None
    return {
        "status": answer.status_code,
        "code": error.get("code") if isinstance(error, dict) else None,
        "message": error.get("message") if isinstance(error, dict) else None,
        "report": report,
    }


def check_gateway(case: HostileCase, outcome: dict[str, Any]) -> None:
    """The gateway's answer against the case's documented status and code."""
    assert outcome["status"] != 500, f"{case.name}: a 500 ({outcome['message']})"
    assert (outcome["status"], outcome["code"]) == (case.status, case.code), (
        f"{case.name}: expected {case.status} {case.code}, got {outcome['status']} "
        f"{outcome['code']}: {outcome['message']}"
    )
    if case.outcome == "refused":
        return
    report = outcome["report"]
    assert report is not None, case.name
    if case.outcome == "fallback":
        assert report["risk"] == "unknown" and report["fallback"], (case.name, report)
    else:
        assert report["risk"] != "unknown" and report["fallback"] is None, (case.name, report)
        if case.prompt is not None:
            assert report["rewritten_prompt"] == case.prompt


def forwarded_text(received: Any) -> str:
    content = received.last_user_content
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


@pytest.mark.parametrize("case", IN_PROCESS, ids=ids)
def test_gateway_answers_each_case_as_documented(gateway: Gateway, case: HostileCase) -> None:
    before = len(gateway.upstream.requests)
    answer, elapsed = post(gateway, case)
    check_gateway(case, gateway_outcome(answer))
    check_within(case, elapsed, "the gateway")
    received = gateway.upstream.requests[before:]
    if case.outcome == "refused":
        assert received == [], f"{case.name}: a refused request reached the upstream"
        return
    assert len(received) == 1
    if case.outcome == "fallback":
        assert forwarded_text(received[0]).startswith(shield_prompt("")[:40])
    elif case.prompt is not None:
        assert forwarded_text(received[0]) == case.prompt


def test_gateway_stays_healthy_after_the_corpus(gateway: Gateway) -> None:
    started = time.perf_counter()
    answer = gateway.client.get(f"{gateway.url}/healthz")
    assert answer.status_code == 200
    assert time.perf_counter() - started < 1.0


# -- memory: image cases in forked children -----------------------------------------------


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Kilobytes on Linux, bytes on macOS.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _cap_address_space() -> None:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
    except OSError:
        return  # no /proc: run uncapped
    limit = pages * os.sysconf("SC_PAGE_SIZE") + CHILD_ADDRESS_SPACE_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure_core(case: HostileCase, entry: str) -> dict[str, Any]:
    """Run ``case`` at ``aguard`` or ``arewrite``; its outcome, seconds and memory growth."""
    rewriter = build_rewriter()
    # Built before the baseline: the inputs are not what is measured.
    messages = case.build_messages()
    text, images = case.direct_request()
    start = _maxrss_mb()
    started = time.perf_counter()
    if entry == "aguard":
        outcome = asyncio.run(guard_outcome(rewriter, messages))
    else:
        outcome = asyncio.run(direct_outcome(rewriter, text, images))
    outcome["seconds"] = time.perf_counter() - started
    outcome["rss_growth_mb"] = _maxrss_mb() - start
    return outcome


def measure_gateway(case: HostileCase) -> dict[str, Any]:
    """Serve the gateway in this process, post ``case``, and measure the growth."""
    body = case.build_body()
    with served_gateway() as gw:
        gw.client.get(f"{gw.url}/healthz")  # every lazy import and buffer in place
        start = _maxrss_mb()
        started = time.perf_counter()
        answer = gw.client.post(
            f"{gw.url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        outcome = gateway_outcome(answer)
        outcome["seconds"] = time.perf_counter() - started
        outcome["rss_growth_mb"] = _maxrss_mb() - start
        outcome["forwarded"] = len(gw.upstream.requests)
    return outcome


def _run_forked(request: dict[str, str]) -> dict[str, Any]:
    """Fork, run one measurement in the child, return what it reported."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report through the pipe, exit without cleanup
        os.close(read_end)
        try:
            _cap_address_space()
            case = CASES_BY_NAME[request["case"]]
            if request["entry"] == "gateway":
                report = measure_gateway(case)
            else:
                report = measure_core(case, request["entry"])
        except BaseException:  # report anything, MemoryError included
            import traceback

            report = {"crash": traceback.format_exc()[-3000:]}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + CHILD_DEADLINE_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read_end)
            return {"crash": f"still running after {CHILD_DEADLINE_S} s: killed"}
        time.sleep(0.01)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    if not data:
        return {"crash": f"the child died without a report (wait status {status})"}
    return dict(json.loads(data))


def zygote() -> None:
    """Serve measurement requests (JSON lines on stdin) from forked children.

    Everything is imported once here, before any thread exists, so each fork starts in
    a second and its memory growth is the case's own.
    """
    import uvicorn  # noqa: F401  (imported before forking, like everything else)

    for line in sys.stdin:
        print(json.dumps(_run_forked(json.loads(line))), flush=True)


@dataclass
class Zygote:
    process: subprocess.Popen[str]

    def measure(self, case: HostileCase, entry: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"case": case.name, "entry": entry}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            pytest.fail("the measuring process ended unexpectedly")
        return dict(json.loads(line))


@pytest.fixture(scope="module")
def measuring() -> Iterator[Zygote]:
    if not hasattr(os, "fork"):
        pytest.fail("memory is measured in forked children: this needs a POSIX system")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, __file__, "--zygote"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield Zygote(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=CHILD_DEADLINE_S)


MEASURED_ENTRIES = [
    pytest.param(case, entry, id=f"{case.name}-{entry}")
    for case in MEASURED
    for entry in ("aguard", "arewrite", "gateway")
    if entry != "arewrite" or case.direct
]


@pytest.mark.parametrize(("case", "entry"), MEASURED_ENTRIES)
def test_image_cases_stay_within_memory_and_time(
    measuring: Zygote, case: HostileCase, entry: str
) -> None:
    outcome = measuring.measure(case, entry)
    if entry == "gateway":
        check_gateway(case, outcome)
        if case.outcome == "refused":
            assert outcome["forwarded"] == 0
    else:
        check_guarded(case, outcome, entry)
    check_within(case, outcome["seconds"], entry)
    assert case.max_rss_growth_mb is not None
    assert outcome["rss_growth_mb"] < case.max_rss_growth_mb, (
        f"{case.name} grew memory by {outcome['rss_growth_mb']:.0f} MB at {entry}, over "
        f"its {case.max_rss_growth_mb:.0f} MB bound"
    )


# -- the corpus itself -----------------------------------------------------------------


def test_each_case_is_documented_and_reaches_an_entry_point() -> None:
    assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"
    for case in CASES:
        assert case.threat and case.outcome in ("refused", "fallback", "answered")
        assert case.messages is not None or case.body is not None, case.name
        assert case.status != 500
        if case.outcome == "refused":
            assert case.status >= 400 and case.code, case.name
            assert case.core == (case.error is not None), case.name
        else:
            assert (case.status, case.code, case.error) == (200, None, None), case.name


def test_the_bombs_are_real_images() -> None:
    # A "bomb" the decoder cannot even open would test the decode-error path, not the
    # pixel limits: each must be a valid image whose header announces its full size.
    import io
    import warnings

    from PIL import Image

    bombs = (
        (one_colour_webp(BOMB_SIDE, BOMB_SIDE), "WEBP"),
        (one_colour_png(BOMB_SIDE, BOMB_SIDE), "PNG"),
    )
    for data, fmt in bombs:
        with warnings.catch_warnings():
            # Pillow's own bomb warning, for the header read here on purpose.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
        assert (opened.format, opened.size) == (fmt, (BOMB_SIDE, BOMB_SIDE))
        assert len(data) < 16 * 1024
    small = Image.open(io.BytesIO(one_colour_webp(9, 7, (10, 200, 30))))
    small.load()
    assert small.getextrema() == ((10, 10), (200, 200), (30, 30))
    png = Image.open(io.BytesIO(one_colour_png(9, 7, white=True)))
    png.load()
    assert png.getextrema() == (255, 255)
    assert len(set(near_limit_bombs())) == len(near_limit_bombs())
    gif = Image.open(io.BytesIO(animated_gif()))
    assert getattr(gif, "n_frames", 1) == 400


def test_the_scripted_rewriter_answers_each_case() -> None:
    rewriter = build_rewriter()
    case = CASES_BY_NAME["answer-rewrite-after-50k-spaces"]
    text, images = case.direct_request()
    assert rewriter.rewrite(text, images=images).prompt == SAFE_REWRITE


# -- the LlamaIndex adapter ----------------------------------------------------------


def llama_block(part: Any) -> Any:
    """One OpenAI-form content part as the LlamaIndex block a user would send.

    Raises pydantic's ``ValidationError`` where LlamaIndex refuses to build the block.
    """
    from llama_index.core.base.llms.types import (
        AudioBlock,
        CitableBlock,
        DocumentBlock,
        ImageBlock,
        TextBlock,
        VideoBlock,
    )

    if isinstance(part, str):
        return TextBlock(text=part)
    kind = part["type"]
    if kind in ("text", "input_text"):
        return TextBlock(text=part["text"])
    if kind == "image_url":
        return ImageBlock(url=part["image_url"]["url"])
    if kind == "input_image":
        return ImageBlock(url=part["image_url"])
    if kind == "input_audio":
        return AudioBlock(audio=part["input_audio"]["data"].encode(), format="wav")
    if kind == "video_url":
        return VideoBlock(url=part["video_url"]["url"])
    if kind == "file":
        return DocumentBlock(data=part["file"]["file_data"].encode())
    # LlamaIndex has no unknown block: one it has and the guard does not read stands in.
    return CitableBlock(content=[TextBlock(text=str(part))], source="hostile", title="x")


def llama_messages(messages: list[dict[str, Any]]) -> list[Any]:
    """OpenAI-form messages as LlamaIndex ``ChatMessage`` blocks."""
    from llama_index.core.base.llms.types import ChatMessage

    converted = []
    for message in messages:
        content = message["content"]
        parts = [content] if isinstance(content, str) else content or []
        converted.append(ChatMessage(role=message["role"], blocks=[llama_block(p) for p in parts]))
    return converted


def llama_rewrite_recorder() -> Any:
    """An instrumentation handler keeping the ``RewriteResult`` of every rewrite event."""
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index_vlmguard import VLMGuardRewriteEvent

    class RewriteRecorder(BaseEventHandler):
        results: list[Any] = []

        @classmethod
        def class_name(cls) -> str:
            return "HostileRewriteRecorder"

        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, VLMGuardRewriteEvent):
                self.results.append(event.result)

    return RewriteRecorder(results=[])


def llama_call(entry: str, vlm: Any, rewriter: Rewriter, messages: list[Any]) -> None:
    """Guard ``messages`` through ``entry`` and send what it gives to ``vlm``."""
    from llama_index_vlmguard import VLMGuardLLM, aguard_messages, guard_messages

    if entry == "guard_messages":
        vlm.chat(guard_messages(messages, rewriter, allow_local_files=False).messages)
    elif entry == "aguard_messages":
        guarded = asyncio.run(aguard_messages(messages, rewriter, allow_local_files=False))
        vlm.chat(guarded.messages)
    else:
        asyncio.run(VLMGuardLLM(llm=vlm, rewriter=rewriter).achat(messages))


def llama_user_text(messages: list[Any]) -> str:
    """The text of the last user message the wrapped LLM received."""
    from llama_index.core.base.llms.types import TextBlock

    last = [m for m in messages if m.role.value == "user"][-1]
    return "\n".join(block.text for block in last.blocks if isinstance(block, TextBlock))


LLAMA_ENTRIES = ("guard_messages", "aguard_messages", "VLMGuardLLM.achat")


@pytest.mark.parametrize("entry", LLAMA_ENTRIES)
@pytest.mark.parametrize("case", [c for c in IN_PROCESS if c.core], ids=ids)
def test_llama_index_guard_answers_each_case_as_documented(case: HostileCase, entry: str) -> None:
    # The adapter is a separate distribution: without it installed there is nothing to run.
    pytest.importorskip("llama_index_vlmguard")
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
    from pydantic import ValidationError

    vlm = MockLLMWithChatMemoryOfLastCall(max_tokens=None, is_chat_model=True)
    rewriter = build_rewriter()
    openai_messages = case.build_messages()
    started = time.perf_counter()
    try:
        messages = llama_messages(openai_messages)
    except ValidationError as exc:
        # LlamaIndex itself refused the hostile input: a refusal, owed only where the
        # case is refused.
        assert case.outcome == "refused", (
            f"{case.name}: LlamaIndex refused to build the messages of a case owed "
            f"{case.outcome}: {str(exc)[:300]}"
        )
        check_within(case, time.perf_counter() - started, "LlamaIndex's ChatMessage")
        return
    recorder = llama_rewrite_recorder()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    try:
        if case.outcome == "refused":
            assert case.error is not None
            with pytest.raises(case.error):
                llama_call(entry, vlm, rewriter, messages)
            elapsed = time.perf_counter() - started
            assert vlm.last_chat_messages is None, f"{case.name}: the wrapped LLM was called"
        else:
            llama_call(entry, vlm, rewriter, messages)
            elapsed = time.perf_counter() - started
    finally:
        dispatcher.event_handlers.remove(recorder)
    check_within(case, elapsed, entry)
    if case.outcome == "refused":
        return
    assert vlm.last_chat_messages is not None, f"{case.name}: the wrapped LLM was never called"
    received = llama_user_text(vlm.last_chat_messages)
    shielded = received.startswith(shield_prompt("")[:40])
    assert shielded == (case.outcome == "fallback"), (case.name, received[:200])
    assert len(recorder.results) == 1, (case.name, recorder.results)
    result = recorder.results[0]
    if case.outcome == "fallback":
        assert result.risk is None and result.fallback, (case.name, result_outcome(result))
    else:
        assert result.risk is not None and result.fallback is None, (
            case.name,
            result_outcome(result),
        )
        if case.prompt is not None:
            assert received == case.prompt


# -- the NeMo Guardrails rail --------------------------------------------------------

NEMO_REFUSAL = "I'm sorry, I can't respond to that."
NEMO_ANSWER = "Here is a careful answer."

NEMO_CONFIG_YML = """\
import_paths:
  - nemoguardrails_vlmguard
passthrough: true
rails:
  input:
    flows:
      - vlmguard rewrite input
  tool_input:
    flows:
      - vlmguard check tool input
"""


def nemo_config_py() -> str:
    """The configuration's ``config.py``: ``register`` with this file's ``build_rewriter``."""
    import inspect

    return (
        "from nemoguardrails_vlmguard import register\n"
        "from vlmguard_plugins import Rewriter, URLPolicy\n"
        "from vlmguard_plugins.hostile import metadata_resolver, responder\n"
        "from vlmguard_plugins.testing import ScriptedBackend\n\n\n"
        + inspect.getsource(build_rewriter)
        + "\n\ndef init(app):\n    register(app, rewriter=build_rewriter())\n"
    )


@pytest.fixture
def nemo_app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Builds ``LLMRails`` with the rail and a main LLM that records its prompts."""
    pytest.importorskip("nemoguardrails_vlmguard")
    from nemoguardrails import LLMRails, RailsConfig
    from nemoguardrails.rails.llm import config as rails_config
    from nemoguardrails.testing import FakeLLMModel
    from nemoguardrails_vlmguard import colang_path

    # NeMo reads COLANGPATH at import; an editable checkout's rail is added as it would be.
    monkeypatch.setattr(
        rails_config, "colang_path_dirs", [*rails_config.colang_path_dirs, str(colang_path())]
    )

    class RecordingLLM(FakeLLMModel):
        def __init__(self) -> None:
            super().__init__(responses=[NEMO_ANSWER] * 5)
            self.prompts: list[Any] = []

        async def generate_async(self, prompt, *, stop=None, **kwargs):  # type: ignore[no-untyped-def]
            self.prompts.append(prompt)
            return await super().generate_async(prompt, stop=stop, **kwargs)

    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "config.yml").write_text(NEMO_CONFIG_YML)
    (folder / "config.py").write_text(nemo_config_py())

    def make() -> tuple[Any, RecordingLLM]:
        llm = RecordingLLM()
        return LLMRails(RailsConfig.from_path(str(folder)), llm=llm), llm

    return make


def nemo_user_text(prompt: Any) -> str:
    """The text of the last user message of a main-LLM call (or the prompt string)."""
    if isinstance(prompt, str):
        return prompt
    content = [m for m in prompt if m.role.value == "user"][-1].content
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")


@pytest.mark.parametrize("case", [c for c in IN_PROCESS if c.core], ids=ids)
async def test_nemoguardrails_rail_answers_each_case_as_documented(
    case: HostileCase, nemo_app: Any
) -> None:
    from vlmguard_plugins import errors

    app, llm = nemo_app()
    messages = case.build_messages()
    started = time.perf_counter()
    response = await app.generate_async(messages=messages, options={"output_vars": ["vlmguard"]})
    check_within(case, time.perf_counter() - started, "LLMRails.generate_async")
    verdict = response.output_data["vlmguard"]
    answer = response.response[-1]["content"]
    if case.outcome == "refused":
        assert verdict is not None and verdict.action == "refuse", (
            f"{case.name}: the rail did not refuse (action "
            f"{getattr(verdict, 'action', None)}, risk {getattr(verdict, 'risk', None)})"
        )
        assert answer == NEMO_REFUSAL, (case.name, answer)
        assert llm.prompts == [], f"{case.name}: a refused request reached the main LLM"
        assert verdict.risk == "unknown"
        assert case.error is not None
        assert issubclass(getattr(errors, verdict.error_type), case.error), (
            f"{case.name}: expected {case.error.__name__}, got {verdict.error_type}: "
            f"{verdict.error}"
        )
        return
    assert verdict is not None and verdict.action != "refuse", (
        f"{case.name}: refused ({verdict.error_type}: {verdict.error}) a case owed {case.outcome}"
    )
    assert answer == NEMO_ANSWER, (case.name, answer)
    assert len(llm.prompts) == 1, case.name
    received = nemo_user_text(llm.prompts[-1])
    shielded = received.startswith(shield_prompt("")[:40])
    assert shielded == (case.outcome == "fallback"), (case.name, received[:200])
    if case.outcome == "fallback":
        assert verdict.risk == "unknown" and verdict.fallback, (case.name, verdict)
        assert verdict.action == "shield"
    else:
        assert verdict.risk != "unknown" and verdict.fallback is None, (case.name, verdict)
        if case.prompt is not None:
            assert received == case.prompt


if __name__ == "__main__" and sys.argv[1:] == ["--zygote"]:
    zygote()
