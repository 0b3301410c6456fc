"""A structured audit log of guard decisions: one JSON object per line.

Every decision of the guard (a rewrite, a request left unchanged, a failure-policy
result, a refused input) can be written as one line, for compliance records and for
measuring the guard on real traffic::

    from vlmguard_plugins.audit import AuditLog, AuditRecord, digest_images

    with AuditLog("guard-audit.jsonl") as audit:
        guarded = await rewriter.aguard(conversation)
        audit.write(
            AuditRecord.for_result(
                guarded.result, mode="enforce", images=digest_images(conversation)
            )
        )

A line carries the time, a request id, the mode, the model, the risk, the action, the
failure policy's reason, the latency, and the SHA-256 of every image, never the image
itself.  The user's text, the rewrite, the analysis, a shadow diff and error messages
may quote what the user sent, so they are written only when the log is opened with
``include_text=True``; without it the failure policy's reason is the error class alone
(``BackendError``), never the message of an upstream server that may echo the request.
Identifiers the client chose (the model, the request id) are cut to
:data:`MAX_ID_CHARS`, every other string to ``max_field_chars``, so one request
cannot write an unbounded line.

Lines are written with a single ``write`` to a file opened for appending, under a lock:
threads and tasks of one process may share an :class:`AuditLog`, and several processes
may append to the same file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from .conversation.model import Conversation, ImagePart
from .policy import fallback_error_type
from .types import RewriteResult

ImageSource = Literal["data", "bytes", "pixels", "url", "path", "unreadable"]
"""What an :class:`ImageDigest` hashed: the decoded bytes of a ``data:`` URL, raw
bytes, the pixels of an in-memory image, or, when the content is not at hand, the text
of a URL or path (``url``, ``path``); ``unreadable`` for a part without a source."""

MAX_FIELD_CHARS = 4096
"""Default length at which a string field is cut."""

MAX_ID_CHARS = 200
"""Length at which an identifier the client chose (model, request id, part type) is cut."""

MAX_IMAGES_LISTED = 64
"""Image digests listed per line at most (``image_count`` still counts them all)."""

TEXT_FIELDS = ("text", "rewrite", "analysis", "diff", "detail")
"""Fields that may quote the user and are written only with ``include_text``.

``fallback`` may quote the user too (an upstream server's error body, an image URL):
without ``include_text`` it is written as the error class alone."""


@dataclass(frozen=True)
class ImageDigest:
    """The SHA-256 of one image, and what was hashed (see :data:`ImageSource`)."""

    sha256: str | None
    source: ImageSource
    bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The digest as a JSON object."""
        return {"sha256": self.sha256, "source": self.source, "bytes": self.bytes}


def digest_image(source: Any) -> ImageDigest:
    """The digest of one image source as the core accepts it.

    The content itself is hashed when it is at hand (a ``data:`` URL, bytes, a PIL
    image, a prepared image); a remote URL or a path is not fetched or read, its text
    is hashed instead (``source`` says which).
    """
    from .images import PreparedImage

    if source is None:
        return ImageDigest(None, "unreadable")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return ImageDigest(hashlib.sha256(data).hexdigest(), "bytes", len(data))
    if isinstance(source, PreparedImage):
        return ImageDigest(source.sha256, "pixels")
    if isinstance(source, Path):
        return ImageDigest(_sha256_text(str(source)), "path")
    if isinstance(source, str):
        return _digest_text_source(source)
    tobytes = getattr(source, "tobytes", None)
    if callable(tobytes):  # a PIL image
        pixels = tobytes()
        return ImageDigest(hashlib.sha256(pixels).hexdigest(), "pixels", len(pixels))
    return ImageDigest(None, "unreadable")


def _digest_text_source(source: str) -> ImageDigest:
    if source[:5].lower() == "data:":
        header, sep, payload = source.partition(",")
        if sep and ";base64" in header.lower():
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                pass
            else:
                return ImageDigest(hashlib.sha256(data).hexdigest(), "data", len(data))
        # Not decodable: the URL's own text is what the model would receive.
        return ImageDigest(_sha256_text(source), "data", len(source))
    if "://" in source:
        return ImageDigest(_sha256_text(source), "url")
    return ImageDigest(_sha256_text(source), "path")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def digest_images(conversation: Conversation) -> tuple[ImageDigest, ...]:
    """The digest of every image of every turn, in conversation order.

    Hashing megabytes takes milliseconds: call it from a thread on an event loop.
    """
    return tuple(
        digest_image(part.source)
        for turn in conversation
        for part in turn.parts
        if isinstance(part, ImagePart)
    )


def new_request_id() -> str:
    """A fresh random request id (32 hex digits)."""
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class AuditRecord:
    """One guard decision, as written to the audit log.

    ``action`` is the result's action (``rewrite``, ``unchanged``, ``shield``,
    ``block``, ``passthrough``) or what happened instead (``refused_input``,
    ``guard_unavailable``, ``skipped``, ``cancelled``, ``error``); ``risk`` is
    ``unknown`` whenever the rewriter gave no verdict.  ``error`` is a short code (an
    error code, or why work was skipped); ``detail`` its message, which may quote the
    input and is written only with ``include_text``, as are ``text`` (the user's),
    ``rewrite``, ``analysis`` and ``diff``; without it ``fallback`` (the failure
    policy's reason) is written as its error class only.  ``extra`` holds small entry-point specific
    fields (``speculative``: ``hit`` or ``miss``...).
    """

    mode: str
    action: str
    risk: str = "unknown"
    request_id: str = field(default_factory=new_request_id)
    timestamp: datetime = field(default_factory=_now)
    model: str | None = None
    changed: bool = False
    fallback: str | None = None
    policy: str | None = None
    latency_ms: float | None = None
    images: tuple[ImageDigest, ...] = ()
    dropped_parts: tuple[str, ...] = ()
    error: str | None = None
    detail: str | None = None
    text: str | None = None
    rewrite: str | None = None
    analysis: str | None = None
    diff: str | None = None
    extra: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)

    @classmethod
    def for_result(cls, result: RewriteResult, *, mode: str, **fields: Any) -> AuditRecord:
        """The record of a rewrite ``result`` (risk, action, fallback, text fields).

        ``fields`` set or override any other field (``request_id``, ``images``...).
        """
        values: dict[str, Any] = {
            "risk": result.risk_label,
            "action": result.action,
            "changed": result.changed,
            "fallback": result.fallback,
            "latency_ms": round(result.latency_ms, 3),
            "text": result.original,
            "rewrite": result.prompt,
            "analysis": result.analysis,
        }
        values.update(fields)
        return cls(mode=mode, **values)

    def as_dict(
        self, *, include_text: bool = False, max_field_chars: int = MAX_FIELD_CHARS
    ) -> dict[str, Any]:
        """The record as the JSON object written for it (text fields per ``include_text``)."""
        id_chars = min(MAX_ID_CHARS, max_field_chars)
        fallback = self.fallback
        if fallback is not None and not include_text:
            fallback = fallback_error_type(fallback)
        line: dict[str, Any] = {
            "timestamp": self.timestamp.isoformat(timespec="milliseconds"),
            "request_id": _bounded(self.request_id, id_chars),
            "mode": self.mode,
            "model": _bounded(self.model, id_chars),
            "risk": self.risk,
            "action": self.action,
            "changed": self.changed,
            "fallback": fallback,
            "policy": self.policy,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "image_count": len(self.images),
            "images": [digest.as_dict() for digest in self.images[:MAX_IMAGES_LISTED]],
            "dropped_parts": [
                _bounded(kind, id_chars) for kind in self.dropped_parts[:MAX_IMAGES_LISTED]
            ],
            "error": self.error,
        }
        if include_text:
            for name in TEXT_FIELDS:
                line[name] = getattr(self, name)
        for name, value in self.extra.items():
            line.setdefault(name, value)
        return _bounded(line, max_field_chars)


def _bounded(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return value[:limit] + f"... [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {key: _bounded(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_bounded(item, limit) for item in value]
    return value


class AuditLog:
    """Writes :class:`AuditRecord` lines to a file or a text stream.

    Args:
        target: a path (opened for appending, created when missing) or an open text
            stream such as ``sys.stdout`` (not closed by :meth:`close`).
        include_text: also write the user's text, the rewrite, the analysis, a
            shadow diff and error messages (they may hold personal data).
        max_field_chars: strings longer than this are cut, with a note of how much.

    Each :meth:`write` is one line, written and flushed at once under a lock.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str],
        *,
        include_text: bool = False,
        max_field_chars: int = MAX_FIELD_CHARS,
    ) -> None:
        if max_field_chars < 1:
            raise ValueError("max_field_chars must be at least 1")
        self.include_text = include_text
        self.max_field_chars = max_field_chars
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        self._fd: int | None = None
        if isinstance(target, (str, os.PathLike)):
            # One os.write per line on an O_APPEND descriptor: lines from several
            # processes sharing the file land whole, never interleaved mid-line.
            self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self.path: Path | None = Path(target)
        else:
            self._stream = target
            self.path = None
        self.closed = False

    def write(self, record: AuditRecord) -> None:
        """Write ``record`` as one JSON line and flush it.

        Raises:
            ValueError: the log is closed.
            OSError: the file cannot be written.
        """
        line = self.format(record)
        with self._lock:
            if self.closed:
                raise ValueError("the audit log is closed")
            if self._fd is not None:
                data = line.encode("utf-8")
                written = os.write(self._fd, data)
                while written < len(data):  # a short write (a full disk, a signal)
                    written += os.write(self._fd, data[written:])
            elif self._stream is not None:
                self._stream.write(line)
                self._stream.flush()

    def format(self, record: AuditRecord) -> str:
        """The line :meth:`write` writes for ``record``, newline included."""
        payload = record.as_dict(
            include_text=self.include_text, max_field_chars=self.max_field_chars
        )
        # ensure_ascii: a lone surrogate in client text still makes a valid UTF-8 line.
        return json.dumps(payload, ensure_ascii=True, default=str) + "\n"

    def write_many(self, records: Iterable[AuditRecord]) -> None:
        """Write several records, one line each."""
        for record in records:
            self.write(record)

    def close(self) -> None:
        """Close the file (a stream given to the constructor stays open)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # Its own `with` protocol: it closes rather than stops, and production code does not
    # take the test servers' base class (vlmguard_plugins.testing).
    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_audit_log(path: str | os.PathLike[str] | IO[str]) -> list[dict[str, Any]]:
    """The records of an audit log file (or stream), one dict per line."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if isinstance(path, io.StringIO):
        return [json.loads(line) for line in path.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in path if line.strip()]


__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_ID_CHARS",
    "MAX_IMAGES_LISTED",
    "TEXT_FIELDS",
    "AuditLog",
    "AuditRecord",
    "ImageDigest",
    "ImageSource",
    "digest_image",
    "digest_images",
    "new_request_id",
    "read_audit_log",
]
