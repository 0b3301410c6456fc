"""The rewriter's verdicts by conversation state: an agent pays for new content only.

An agent calls its LLM once per step, each time with the whole conversation so far:
the user's message, then the model's tool calls and the tools' results.  Guarding every
call from scratch would ask the rewriter again at every step, even when the step brought
nothing new to judge.  :class:`VerdictCache` keeps each verdict under a digest of the
conversation state it judged: every message in order, each by everything the guard
reads in it (role, text, images, other blocks, extra fields), except

- the model's own answers, the messages the LLM produced through the guard (recorded
  with :meth:`VerdictCache.remember_answer`; :class:`~llama_index_vlmguard.VLMGuardLLM`
  records every answer it returns), unless they hold an image;
- tool and system messages that carry nothing at all (an empty tool result).

So a new or edited user message, a tool result with text or an image, an image in any
message, an assistant message the LLM did not write through the guard (one written into
the history by a client), all make a new state, and the rewriter reads the whole
conversation again, the model's answers included, as history.  A step that adds only
the model's tool call and an empty result finds the verdict already there.

Only verdicts are kept: a result of the failure policy (``fallback`` set) is not, so
the next call asks the rewriter again.  The digest also covers the rewriter's system
prompt (a new prompt is a new judge) and whether local files may be read; use one
cache per rewriter.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage

from vlmguard_plugins import Conversation, ImagePart, OtherPart, Rewriter, RewriteResult, TextPart
from vlmguard_plugins.conversation import Turn

from .conversation import EncodedImage, turn_from_message

DEFAULT_MAX_ENTRIES = 256
"""Verdicts a :class:`VerdictCache` keeps unless told otherwise."""

ANSWERS_PER_ENTRY = 4
"""Model answers remembered per verdict kept (an agent's run has several per verdict)."""


class VerdictCache:
    """The rewriter's verdicts by conversation state, least recently used dropped first.

    Thread-safe: a wrapper shared by an application's threads and event loops shares
    one cache.

    Args:
        max_entries: the most verdicts kept (at least 1); ``ANSWERS_PER_ENTRY`` times as
            many model answers are remembered.

    Example::

        cache = VerdictCache()
        guarded = await aguard_messages(messages, rewriter, cache=cache)  # asks the rewriter
        response = await vlm.achat(guarded.messages)
        cache.remember_answer(response.message)  # the model's words are not new input
        messages += [response.message, tool_result_without_content]
        guarded = await aguard_messages(messages, rewriter, cache=cache)  # does not
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a VerdictCache keeps at least one verdict")
        self.max_entries = max_entries
        self._verdicts: OrderedDict[str, RewriteResult] = OrderedDict()
        self._answers: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of verdicts kept."""
        return len(self._verdicts)

    def key(
        self, conversation: Conversation, rewriter: Rewriter, *, allow_local_files: bool
    ) -> str | None:
        """The digest of ``conversation``'s state, as ``rewriter`` would judge it.

        Convert the messages with ``to_conversation(..., decode_images=False)`` (as
        :func:`~llama_index_vlmguard.guard_messages` does), so that the images are
        identified by the bytes their blocks hold, without decoding them.

        ``None`` when an image cannot be identified without loading it (a
        ``PIL.Image``, a path that cannot be examined): such a conversation is never
        cached, the rewriter reads it every time.
        """
        digest = hashlib.blake2b(digest_size=32)
        _field(digest, b"s", rewriter.system_prompt.encode("utf-8", "surrogatepass"))
        _field(digest, b"f", b"1" if allow_local_files else b"0")
        for turn in conversation:
            if _carries_nothing(turn):
                continue
            identity = turn_identity(turn)
            if identity is None:
                return None
            if turn.role == "assistant" and not turn.images and self._is_answer(identity):
                continue
            _field(digest, b"m", identity)
        return digest.hexdigest()

    def get(self, key: str) -> RewriteResult | None:
        """The verdict kept under ``key``, if any."""
        with self._lock:
            result = self._verdicts.get(key)
            if result is not None:
                self._verdicts.move_to_end(key)
            return result

    def put(self, key: str, result: RewriteResult) -> None:
        """Keep ``result`` under ``key``, unless the failure policy produced it."""
        if result.fallback is not None:
            return  # not a verdict: the rewriter is asked again next time
        with self._lock:
            self._verdicts[key] = result
            self._verdicts.move_to_end(key)
            while len(self._verdicts) > self.max_entries:
                self._verdicts.popitem(last=False)

    def remember_answer(self, message: ChatMessage) -> None:
        """Record ``message`` as the model's own answer, which is not new input when it returns.

        Call it with every message your LLM produced after a guarded call; an answer
        that is not recorded is judged like any other new message when it comes back
        in the conversation (a rewriter call, never a miss).
        """
        identity = turn_identity(turn_from_message(message, decode_images=False))
        if identity is None:
            return
        with self._lock:
            self._answers[identity] = None
            self._answers.move_to_end(identity)
            while len(self._answers) > self.max_entries * ANSWERS_PER_ENTRY:
                self._answers.popitem(last=False)

    def clear(self) -> None:
        """Forget every verdict and every answer."""
        with self._lock:
            self._verdicts.clear()
            self._answers.clear()

    def _is_answer(self, identity: bytes) -> bool:
        with self._lock:
            return identity in self._answers


def turn_identity(turn: Turn) -> bytes | None:
    """A digest of everything the guard reads in a turn, or ``None`` when an image has none.

    The role, every part in order (text, an image's identity, another block's type and
    fields) and the message's extra fields (``additional_kwargs``: tool calls, ids).
    More than the rewriter reads of some messages, so two messages with one identity
    are the same to the rewriter.
    """
    digest = hashlib.blake2b(digest_size=32)
    _field(digest, b"r", f"{turn.role}/{turn.source_role}".encode())
    for part in turn.parts:
        if isinstance(part, TextPart):
            _field(digest, b"t", part.text.encode("utf-8", "surrogatepass"))
        elif isinstance(part, ImagePart):
            image = _image_identity(part.source)
            if image is None and part.problem is None:
                return None
            _field(digest, b"i", image or (part.problem or "").encode())
        elif isinstance(part, OtherPart):
            _field(digest, b"o", part.kind.encode() + b"\0" + _dump(part.raw))
    _field(digest, b"k", _dump(getattr(turn.raw, "additional_kwargs", None)))
    return digest.digest()


def _carries_nothing(turn: Turn) -> bool:
    """A tool or system message with no text, no image and no other block (an empty result).

    Never a user message (an empty one is still the request the rewrite goes to), nor an
    assistant message, whose extra fields may carry tool calls: one the model did not
    write through the guard is new input.
    """
    if turn.role not in ("tool", "system"):
        return False
    return not turn.text.strip() and not turn.images and not turn.others


def _dump(value: Any) -> bytes:
    # Any object a framework puts in a block or in additional_kwargs: pydantic models and
    # provider objects by their repr, which names every field.
    return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _field(digest: Any, tag: bytes, data: bytes) -> None:
    # Length-prefixed, so no two different sequences of fields give the same stream.
    digest.update(tag + len(data).to_bytes(8, "big"))
    digest.update(data)


def _image_identity(source: Any) -> bytes | None:
    """What identifies an image source without decoding it, or ``None`` when nothing does."""
    if isinstance(source, str):
        return b"u" + source.encode("utf-8", "surrogatepass")
    if isinstance(source, EncodedImage):
        return b"e" + hashlib.blake2b(source.data, digest_size=32).digest()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return b"b" + hashlib.blake2b(source, digest_size=32).digest()
    if isinstance(source, Path):
        try:
            stat = os.stat(source)
        except OSError:
            return None  # the core reports the problem when it reads the file
        # The file's identity and version: a file rewritten under the same name is new.
        version = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        return b"p" + os.fsencode(source) + b"\0" + repr(version).encode()
    return None


__all__ = ["ANSWERS_PER_ENTRY", "DEFAULT_MAX_ENTRIES", "VerdictCache", "turn_identity"]
