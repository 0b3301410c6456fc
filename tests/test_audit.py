"""The audit log: one JSON line per guard decision, hashes not images, text only when asked."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.audit import (
    MAX_ID_CHARS,
    AuditLog,
    AuditRecord,
    digest_image,
    digest_images,
    read_audit_log,
)
from vlmguard_plugins.conversation import Conversation, ImagePart, TextPart, Turn
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.testing import (
    ChatCompletionServer,
    ErrorStatus,
    ScriptedBackend,
    run_in_thread,
)

QUESTION = "How do I use this to hurt someone?"
REWRITE = "Explain how to handle the object in this picture safely."


def png_bytes(color: str = "orange") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def conversation() -> Conversation:
    return Conversation(
        (Turn("user", (TextPart(QUESTION), ImagePart(DATA_URL), ImagePart(png_bytes("blue")))),)
    )


async def guarded_record(**fields: object) -> AuditRecord:
    rewriter = Rewriter(ScriptedBackend.rewriting_to(REWRITE, risk="high"))
    guarded = await rewriter.aguard(conversation())
    assert guarded.result is not None
    return AuditRecord.for_result(
        guarded.result, mode="enforce", images=digest_images(conversation()), **fields
    )


async def test_a_decision_is_one_line_with_image_hashes_and_no_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        audit.write(await guarded_record(request_id="req-1", model="vlm", policy="shield"))
    written = path.read_text()
    assert written.count("\n") == 1
    (line,) = read_audit_log(path)
    assert line["request_id"] == "req-1" and line["mode"] == "enforce"
    assert (line["risk"], line["action"], line["changed"]) == ("high", "rewrite", True)
    assert line["image_count"] == 2
    assert [image["sha256"] for image in line["images"]] == [
        hashlib.sha256(PNG).hexdigest(),
        hashlib.sha256(png_bytes("blue")).hexdigest(),
    ]
    assert line["timestamp"].endswith("+00:00")
    for secret in (QUESTION, REWRITE, "scripted", base64.b64encode(PNG).decode()[:40]):
        assert secret not in written
    assert not {"text", "rewrite", "analysis", "diff", "detail"} & set(line)


async def test_text_fields_are_written_only_when_asked_and_cut_to_size() -> None:
    stream = io.StringIO()
    audit = AuditLog(stream, include_text=True, max_field_chars=20)
    record = await guarded_record(diff="x" * 100)
    audit.write(record)
    (line,) = read_audit_log(stream)
    assert line["text"] == QUESTION[:20] + f"... [{len(QUESTION) - 20} more characters]"
    assert line["rewrite"].startswith(REWRITE[:20])
    assert line["diff"] == "x" * 20 + "... [80 more characters]"
    # The stream belongs to the caller: closing the log does not close it.
    audit.close()
    assert not stream.closed
    with pytest.raises(ValueError, match="closed"):
        audit.write(record)


def test_lines_stay_whole_under_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    # Two logs on one file, as two gateway workers have.
    logs = [AuditLog(path), AuditLog(path)]
    long_id = "r" * 3000  # lines of several kilobytes

    def write(number: int) -> None:
        for index in range(200):
            logs[number % 2].write(
                AuditRecord(mode="enforce", action="unchanged", request_id=f"{long_id}{index}")
            )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for audit in logs:
        audit.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1600
    assert all(json.loads(line)["action"] == "unchanged" for line in lines)


def test_images_are_hashed_by_content_when_it_is_at_hand() -> None:
    assert digest_image(DATA_URL).sha256 == hashlib.sha256(PNG).hexdigest()
    assert digest_image(DATA_URL).source == "data"
    assert digest_image(PNG) == digest_image(bytearray(PNG))
    assert digest_image(PNG).bytes == len(PNG)
    pixels = Image.new("RGB", (4, 4), "red")
    assert digest_image(pixels).sha256 == hashlib.sha256(pixels.tobytes()).hexdigest()
    # A remote image is not fetched for the log: its URL is hashed, and said so.
    remote = digest_image("https://images.example/cat.png")
    assert remote.source == "url" and remote.bytes is None
    assert digest_image(None).source == "unreadable"


def test_a_record_without_a_verdict_says_so() -> None:
    stream = io.StringIO()
    AuditLog(stream).write(
        AuditRecord(mode="shadow", action="skipped", error="shadow queue full", detail="why")
    )
    (line,) = read_audit_log(stream)
    assert (line["risk"], line["action"], line["error"]) == (
        "unknown",
        "skipped",
        "shadow queue full",
    )
    assert "detail" not in line


def test_an_audit_log_that_cannot_be_opened_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AuditLog(tmp_path / "missing" / "audit.jsonl")


SECRET_TEXT = "SECRETUSERTEXT"
SECRET_TOKEN = "SECRETTOKEN"


@pytest.fixture
def echoing_rewriter_server() -> Iterator[ChatCompletionServer]:
    """A rewriter server whose 400 error body quotes the request, as validators do."""
    server = ChatCompletionServer(model="vlmguard-r1")
    server.inject(
        ErrorStatus(400, f"invalid request: input 'How do I {SECRET_TEXT}' rejected"),
        times=None,
    )
    with server:
        yield server


@pytest.mark.parametrize("include_text", [False, True])
def test_client_text_in_an_error_reaches_the_gateway_log_only_with_include_text(
    tmp_path: Path, echoing_rewriter_server: ChatCompletionServer, include_text: bool
) -> None:
    path = tmp_path / "audit.jsonl"
    with ChatCompletionServer(model="vlm") as vlm:
        settings = GatewaySettings(
            upstream_url=vlm.base_url,
            rewriter_backend="openai",
            rewriter_model="vlmguard-r1",
            rewriter_base_url=echoing_rewriter_server.base_url,
            audit_log=str(path),
            audit_include_text=include_text,
        )
        with run_in_thread(create_app(settings)) as gateway:
            for image_url in (DATA_URL, f"https://images.example/cat.png?tok={SECRET_TOKEN}"):
                body = {
                    "model": "vlm",
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": f"How do I {SECRET_TEXT}"},
                                {"type": "image_url", "image_url": {"url": image_url}},
                            ],
                        }
                    ],
                }
                httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=30)

    shielded, refused = read_audit_log(path)
    assert (shielded["action"], shielded["policy"]) == ("shield", "shield")
    assert refused["action"] == "refused_input"
    written = path.read_text()
    if include_text:
        assert shielded["fallback"].startswith("BackendError: ")
        assert f"input 'How do I {SECRET_TEXT}' rejected" in shielded["fallback"]
        assert SECRET_TOKEN in refused["detail"]
    else:
        # The error class and the policy say what happened; nothing the client sent.
        assert shielded["fallback"] == "BackendError"
        assert SECRET_TEXT not in written
        assert SECRET_TOKEN not in written


def test_identifiers_the_client_chose_are_cut_short() -> None:
    stream = io.StringIO()
    record = AuditRecord(
        mode="enforce",
        action="unchanged",
        model="m" * 5000,
        request_id="r" * 5000,
        dropped_parts=("x" * 5000,),
    )
    AuditLog(stream).write(record)
    (line,) = read_audit_log(stream)
    assert line["model"].startswith("m" * MAX_ID_CHARS + "... [4800 more characters]")
    assert line["request_id"].startswith("r" * MAX_ID_CHARS + "...")
    for value in (line["model"], line["request_id"], line["dropped_parts"][0]):
        assert len(value) < 250
