"""Which words of an LLM prompt are the user's: recorded where LlamaIndex takes them in.

A query engine or a chat engine does not send the LLM what the user typed: it sends a
template filled with retrieved context and the user's question (``text_qa_template``,
a condense prompt, a refine prompt).  Rewriting all of that as if the user had written
it would mangle the context; the guard must rewrite the question alone.

LlamaIndex opens an instrumentation span for every ``query``/``aquery`` of a query
engine and every ``chat``/``achat``/``stream_chat``/``astream_chat`` of a chat engine,
with the call's arguments.  :class:`UserQueryRecorder`, a span handler on the root
dispatcher, remembers the query string (and ``QueryBundle.image_path``) or the chat
message of every such span while it is open; :func:`current_user_query` walks from
the active span (LlamaIndex's own context variable) up to the nearest one.  So an LLM
call made inside ``engine.query(...)`` knows the user's words, nested engines see their
own query (a ``TransformQueryEngine``'s inner engine sees the transformed one), and an
LLM call made anywhere else (an agent, your own code) sees none: its whole last user
message is then the user's.  Spans are forgotten when they close, errors included, so
nothing recorded outlives its call.

Streaming is the exception, because a streaming engine calls its LLM after the call
has returned:

- a streaming query engine returns a ``StreamingResponse`` (``AsyncStreamingResponse``
  from ``aquery``) and calls the LLM only when its ``response_gen`` is read, wherever
  and whenever that is.  When the engine's span closes, the recorder wraps that
  generator so the engine's query is current while each piece is produced, and only
  then;
- a chat engine's ``stream_chat``/``astream_chat`` hands the stream to a thread or a
  task that it starts inside its span, and that reads it in a copy of the span's
  context.  The recorder keeps such a span's query for as long as the returned
  ``StreamingAgentChatResponse`` lives; a streaming chat response with no such
  consumer gets its ``chat_stream``/``achat_stream`` wrapped like a query engine's.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.chat_engine.types import BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span import BaseSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.schema import QueryBundle

MAX_SPAN_DEPTH = 256
"""Deepest span nesting walked when looking for the user's query."""

_QUERY_ARGUMENTS = ("str_or_query_bundle", "query_bundle")


@dataclass(frozen=True)
class UserQuery:
    """What the user asked an engine: their words, and the query's image if any."""

    text: str
    image: str | None = None
    """``QueryBundle.image_path``: a path or URL of the user's image."""


_open_spans: dict[str, tuple[str | None, UserQuery | None]] = {}
"""Every open span: its parent and the user's query it carries (kept out of the pydantic
model: attribute access on a model's private attributes costs microseconds per span)."""

_streaming_query: ContextVar[tuple[UserQuery, str | None] | None] = ContextVar(
    "vlmguard_streaming_query", default=None
)
"""While a streaming engine's answer is being produced: its query, and the span that was
active when the reader asked for the next piece (spans below it were opened by the
stream itself, so an engine call among them is nested in the stream and wins)."""

_T = TypeVar("_T")


class UserQueryRecorder(BaseSpanHandler[BaseSpan]):
    """Remembers, for every open span, its parent and the user's query it carries."""

    @classmethod
    def class_name(cls) -> str:
        return "VLMGuardUserQueryRecorder"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Called for every span of the process: keep it to a tuple and a dict write.
        _open_spans[id_] = (parent_id, _query_of(instance, bound_args))

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> None:
        entry = _open_spans.pop(id_, None)
        if entry is None or entry[1] is None or result is None:
            return  # the common case, every span of the process: no engine, no query
        query = entry[1]
        if isinstance(result, StreamingResponse):
            if result.response_gen is not None and not _is_ours(result.response_gen):
                result.response_gen = _in_query(result.response_gen, query)
        elif isinstance(result, AsyncStreamingResponse):
            if result.response_gen is not None and not _is_ours(result.response_gen):
                result.response_gen = _ain_query(result.response_gen, query)
        elif isinstance(result, StreamingAgentChatResponse):
            if (
                # Read defensively: older LlamaIndex releases do not keep the consumer.
                getattr(result, "write_response_to_history_thread", None) is not None
                or getattr(result, "awrite_response_to_history_task", None) is not None
            ):
                # The consumer already runs (or is scheduled) in a copy of this span's
                # context, and may have taken the stream already: replacing it would
                # race, so the span stays walkable while the response lives.
                _open_spans[id_] = entry
                weakref.finalize(result, _open_spans.pop, id_, None)
            elif result.chat_stream is not None and not _is_ours(result.chat_stream):
                result.chat_stream = _in_query(result.chat_stream, query)
            elif result.achat_stream is not None and not _is_ours(result.achat_stream):
                result.achat_stream = _ain_query(result.achat_stream, query)

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        _open_spans.pop(id_, None)

    def current(self) -> UserQuery | None:
        """The query of the nearest enclosing engine call, or ``None`` outside one.

        Inside a streaming engine's answer being read, the engine's query (unless an
        engine call nested in the stream is nearer).
        """
        streaming = _streaming_query.get()
        reader_span = streaming[1] if streaming is not None else _NO_SPAN
        span_id = active_span_id.get()
        for _ in range(MAX_SPAN_DEPTH):
            if span_id is None or span_id == reader_span:
                break
            entry = _open_spans.get(span_id)
            if entry is None:
                break  # a span opened before the recorder was registered
            span_id, query = entry
            if query is not None:
                return query
        return streaming[0] if streaming is not None else None

    # The base class's span bookkeeping is not used: span_enter/exit/drop above replace it.
    def new_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None


_NO_SPAN = object()
"""Stands for "no reader span": a span id is a string, so no id equals it."""


def _in_query(pieces: Iterator[_T], query: UserQuery) -> Generator[_T, None, None]:
    """``pieces``, with ``query`` current while each one is produced (not between)."""
    try:
        while True:
            token = _streaming_query.set((query, active_span_id.get()))
            try:
                piece = next(pieces)
            except StopIteration:
                return
            finally:
                _streaming_query.reset(token)
            yield piece
    finally:
        # A reader that stops early closes this generator: close the LLM's stream too.
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


# The async twin of _in_query: a sync generator cannot await the stream's next piece.
async def _ain_query(pieces: AsyncIterator[_T], query: UserQuery) -> AsyncGenerator[_T, None]:
    """The async form of :func:`_in_query`."""
    try:
        while True:
            token = _streaming_query.set((query, active_span_id.get()))
            try:
                piece = await anext(pieces)
            except StopAsyncIteration:
                return
            finally:
                _streaming_query.reset(token)
            yield piece
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()


def _is_ours(stream: object) -> bool:
    # An engine's response passes through the spans of every engine call around it
    # (``query`` and ``_query``, an outer ``TransformQueryEngine``): the innermost
    # engine's query, the one in the prompt, is the one that stays.
    code = getattr(stream, "gi_code", None) or getattr(stream, "ag_code", None)
    return code is _in_query.__code__ or code is _ain_query.__code__


_OTHER, _QUERY_ENGINE, _CHAT_ENGINE = 0, 1, 2
_kinds: dict[type, int] = {}


def _kind(instance: Any) -> int:
    # isinstance against these ABCs costs microseconds, and every span of the process
    # comes here: one check per class, then a dictionary lookup.
    cls = type(instance)
    kind = _kinds.get(cls)
    if kind is None:
        if isinstance(instance, BaseQueryEngine):
            kind = _QUERY_ENGINE
        elif isinstance(instance, BaseChatEngine):
            kind = _CHAT_ENGINE
        else:
            kind = _OTHER
        _kinds[cls] = kind
    return kind


def _query_of(instance: Any, bound_args: inspect.BoundArguments) -> UserQuery | None:
    kind = _kind(instance) if instance is not None else _OTHER
    if kind == _QUERY_ENGINE:
        arguments = bound_args.arguments
        for name in _QUERY_ARGUMENTS:
            if name in arguments:
                value = arguments[name]
                if isinstance(value, QueryBundle):
                    return UserQuery(value.query_str, value.image_path)
                if isinstance(value, str):
                    return UserQuery(value)
    elif kind == _CHAT_ENGINE:
        message = bound_args.arguments.get("message")
        if isinstance(message, str):
            return UserQuery(message)
        content = getattr(message, "content", None)
        if isinstance(content, str):
            return UserQuery(content)
    return None


_recorder = UserQueryRecorder()
_registration = threading.Lock()


def record_user_queries() -> UserQueryRecorder:
    """Register the recorder on LlamaIndex's root dispatcher (once) and return it."""
    root = get_dispatcher()
    with _registration:
        if not any(handler is _recorder for handler in root.span_handlers):
            root.add_span_handler(_recorder)
    return _recorder


def current_user_query() -> UserQuery | None:
    """The user's query of the engine call this code runs in, if any (see the module)."""
    return _recorder.current()


__all__ = [
    "MAX_SPAN_DEPTH",
    "UserQuery",
    "UserQueryRecorder",
    "current_user_query",
    "record_user_queries",
]
