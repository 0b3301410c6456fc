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
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.chat_engine.types import BaseChatEngine
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
        _open_spans.pop(id_, None)

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
        """The query of the nearest enclosing engine call, or ``None`` outside one."""
        span_id = active_span_id.get()
        for _ in range(MAX_SPAN_DEPTH):
            if span_id is None:
                return None
            entry = _open_spans.get(span_id)
            if entry is None:
                return None  # a span opened before the recorder was registered
            span_id, query = entry
            if query is not None:
                return query
        return None

    # The base class's span bookkeeping is not used: span_enter/exit/drop above replace it.
    def new_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None


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
