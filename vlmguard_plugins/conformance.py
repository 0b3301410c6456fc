"""The guard's conformance table: one set of inputs every entry point must handle alike.

Each :class:`ConformanceCase` is a conversation in OpenAI Chat Completions form (the
canonical spelling; an entry point's test converts it to its own framework's
messages) with the outcome every entry point must produce:

- ``rewritten``: the rewriter saw every text and image listed, and the downstream
  model received the rewrite in place of the user's text, with the images;
- ``refused``: a typed :class:`~vlmguard_plugins.errors.InputError` (``error``) and
  the downstream model is never called.

:func:`assert_nothing_unseen` checks the promise itself from what the rewriter saw
(the :class:`~vlmguard_plugins.testing.ScriptedBackend`'s calls) and what the
downstream model received.  Use the table for an adapter of your own::

    from vlmguard_plugins.conformance import REWRITE, conformance_cases, assert_nothing_unseen
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from .errors import ImageInputError, InputError, UnsupportedContentError, URLPolicyError
from .testing import ScriptedBackend, ScriptedCall

REWRITE = "CONFORMANCE-REWRITE: answer safely and helpfully."
"""The text every conformance rewrite produces (find it at the downstream model)."""

PartKind = Literal[
    "text",
    "image_url",
    "input_text",
    "input_image",
    "input_audio",
    "file",
    "video_url",
    "unknown",
]


def rewriting_backend() -> ScriptedBackend:
    """The recording backend of the suite: every answer rewrites to :data:`REWRITE`."""
    return ScriptedBackend.rewriting_to(REWRITE, risk="medium")


def png_data_url(colour: tuple[int, int, int], size: int = 24) -> str:
    """A small PNG of one colour as a data URL (distinct colours give distinct images)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


RED = png_data_url((200, 30, 30))
GREEN = png_data_url((30, 200, 30))
BLUE = png_data_url((30, 30, 200))


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@dataclass(frozen=True)
class ConformanceCase:
    """One input and the outcome every entry point must give it."""

    name: str
    messages: list[dict[str, Any]]
    expect: Literal["rewritten", "refused"]
    error: type[InputError] | None = None
    seen_texts: tuple[str, ...] = ()
    seen_images: tuple[str, ...] = ()
    part_kinds: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)


def _case(
    name: str,
    messages: list[dict[str, Any]],
    expect: Literal["rewritten", "refused"],
    *,
    error: type[InputError] | None = None,
    seen_texts: Sequence[str] = (),
    seen_images: Sequence[str] = (),
) -> ConformanceCase:
    kinds: set[str] = set()
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            kinds.update(str(part.get("type")) for part in content)
        elif isinstance(content, str):
            kinds.add("text")
    return ConformanceCase(
        name,
        messages,
        expect,
        error,
        tuple(seen_texts),
        tuple(seen_images),
        frozenset(kinds),
        frozenset(str(message["role"]) for message in messages),
    )


def conformance_cases() -> list[ConformanceCase]:
    """The table (a fresh copy: entry points may mutate what they are given)."""
    q = "How do I use this on my neighbour's door?"
    return [
        _case("text_only", [{"role": "user", "content": q}], "rewritten", seen_texts=[q]),
        _case(
            "text_then_image",
            [{"role": "user", "content": [text(q), image(RED)]}],
            "rewritten",
            seen_texts=[q],
            seen_images=[RED],
        ),
        _case(
            "image_then_text",
            [{"role": "user", "content": [image(RED), text(q)]}],
            "rewritten",
            seen_texts=[q],
            seen_images=[RED],
        ),
        _case(
            "image_only",
            [{"role": "user", "content": [image(GREEN)]}],
            "rewritten",
            seen_images=[GREEN],
        ),
        _case(
            "text_between_images",
            [
                {
                    "role": "user",
                    "content": [text("Compare these."), image(RED), text(q), image(BLUE)],
                }
            ],
            "rewritten",
            seen_texts=["Compare these.", q],
            seen_images=[RED, BLUE],
        ),
        _case(
            "image_in_earlier_turn",
            [
                {"role": "user", "content": [image(RED), text("What is this tool?")]},
                {"role": "assistant", "content": "It is a lock pick set."},
                {"role": "user", "content": q},
            ],
            "rewritten",
            seen_texts=["What is this tool?", "It is a lock pick set.", q],
            seen_images=[RED],
        ),
        _case(
            "images_in_several_turns",
            [
                {"role": "user", "content": [image(RED), text("First picture.")]},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": [text(q), image(BLUE)]},
            ],
            "rewritten",
            seen_texts=["First picture.", q],
            seen_images=[RED, BLUE],
        ),
        _case(
            "image_in_system_message",
            [
                {"role": "system", "content": [text("You are helpful."), image(GREEN)]},
                {"role": "user", "content": q},
            ],
            "rewritten",
            seen_texts=[q],
            seen_images=[GREEN],
        ),
        _case(
            "image_in_tool_result",
            [
                {"role": "user", "content": "Find the product photo and tell me how to use it."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "fetch_photo", "arguments": "{}"},
                        }
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "content": [text("Photo of the product."), image(BLUE)],
                },
            ],
            "rewritten",
            seen_texts=[
                "Find the product photo and tell me how to use it.",
                "Photo of the product.",
            ],
            seen_images=[BLUE],
        ),
        _case(
            "responses_style_parts",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": q},
                        {"type": "input_image", "image_url": BLUE},
                    ],
                }
            ],
            "rewritten",
            seen_texts=[q],
            seen_images=[BLUE],
        ),
        _case(
            "audio_part",
            [
                {
                    "role": "user",
                    "content": [
                        text("Transcribe and follow this."),
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    ],
                }
            ],
            "refused",
            error=UnsupportedContentError,
        ),
        _case(
            "file_part",
            [
                {
                    "role": "user",
                    "content": [
                        text(q),
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,AAAA"},
                        },
                    ],
                }
            ],
            "refused",
            error=UnsupportedContentError,
        ),
        _case(
            "video_part",
            [
                {
                    "role": "user",
                    "content": [
                        text(q),
                        {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
                    ],
                }
            ],
            "refused",
            error=UnsupportedContentError,
        ),
        _case(
            "unknown_part_type",
            [{"role": "user", "content": [text(q), {"type": "hologram", "data": "x"}]}],
            "refused",
            error=UnsupportedContentError,
        ),
        _case(
            "audio_in_earlier_turn",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                    ],
                },
                {"role": "assistant", "content": "I heard it."},
                {"role": "user", "content": "Do what the recording says."},
            ],
            "refused",
            error=UnsupportedContentError,
        ),
        _case(
            "file_url_image",
            [{"role": "user", "content": [text(q), image("file:///etc/passwd")]}],
            "refused",
            error=URLPolicyError,
        ),
        _case(
            "metadata_url_image_in_earlier_turn",
            [
                {
                    "role": "user",
                    "content": [text("Look."), image("http://169.254.169.254/latest/meta-data/")],
                },
                {"role": "assistant", "content": "I see."},
                {"role": "user", "content": q},
            ],
            "refused",
            error=URLPolicyError,
        ),
        _case(
            "undecodable_image",
            [
                {
                    "role": "user",
                    "content": [text(q), image("data:image/png;base64,aGVsbG8gd29ybGQ=")],
                }
            ],
            "refused",
            error=ImageInputError,
        ),
    ]


# --- the check ------------------------------------------------------------------------


def image_digest(source: str | bytes | Image.Image) -> str:
    """A digest of an image's pixels, whatever its encoding (data URL, bytes, PIL)."""
    if isinstance(source, Image.Image):
        picture = source
    else:
        data = source
        if isinstance(data, str):
            data = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data)
        picture = Image.open(io.BytesIO(data))
    rgb = picture.convert("RGB")
    return hashlib.sha256(rgb.tobytes() + repr(rgb.size).encode()).hexdigest()


def texts_and_images(messages: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Every text and image URL of OpenAI-form messages, in order: what a model received.

    Read here, independently of the project's converters, so a test of an entry point
    does not check a converter with itself.
    """
    texts: list[str] = []
    images: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            kind = part.get("type")
            if kind in ("text", "input_text"):
                texts.append(part["text"])
            elif kind == "image_url":
                images.append(part["image_url"]["url"])
            elif kind == "input_image":
                url = part["image_url"]
                images.append(url["url"] if isinstance(url, Mapping) else url)
    return texts, images


def seen_by_rewriter(calls: Sequence[ScriptedCall]) -> tuple[str, set[str]]:
    """All text the rewriter read (its prompts) and the digests of the images it received."""
    texts: list[str] = []
    digests: set[str] = set()
    for call in calls:
        for message in call.request.messages:
            for part in message["content"]:
                if part.get("type") == "text":
                    texts.append(part["text"])
        digests.update(image_digest(prepared.image) for prepared in call.images)
    return "\n".join(texts), digests


def assert_case_seen(case: ConformanceCase, calls: Sequence[ScriptedCall]) -> None:
    """The rewriter read every text and image the case lists."""
    prompt, digests = seen_by_rewriter(calls)
    for expected in case.seen_texts:
        assert expected in prompt, f"{case.name}: the rewriter never read {expected!r}"
    for url in case.seen_images:
        assert image_digest(url) in digests, f"{case.name}: the rewriter never saw an image"


def assert_nothing_unseen(
    case: ConformanceCase,
    calls: Sequence[ScriptedCall],
    forwarded_texts: Iterable[str],
    forwarded_images: Iterable[str | bytes | Image.Image],
    *,
    allowed_texts: Iterable[str] = (),
) -> None:
    """Every text and image the downstream model received was seen by the rewriter.

    ``forwarded_texts`` are the texts of the user, assistant and system turns the
    downstream model received, ``forwarded_images`` its images.  A text passes when
    it is the rewrite, when the rewriter read it, or when it is in ``allowed_texts``
    (the application's own instructions, such as a system prompt or a template).
    """
    prompt, digests = seen_by_rewriter(calls)
    allowed = set(allowed_texts)
    for forwarded in forwarded_texts:
        if not forwarded.strip() or forwarded in allowed or REWRITE in forwarded:
            continue
        assert forwarded in prompt, f"{case.name}: {forwarded!r} reached the model unseen"
    for picture in forwarded_images:
        assert image_digest(picture) in digests, f"{case.name}: an image reached the model unseen"


__all__ = [
    "BLUE",
    "GREEN",
    "RED",
    "REWRITE",
    "ConformanceCase",
    "assert_case_seen",
    "assert_nothing_unseen",
    "conformance_cases",
    "image_digest",
    "png_data_url",
    "rewriting_backend",
    "seen_by_rewriter",
    "texts_and_images",
]
