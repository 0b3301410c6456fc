"""``VLMGuardRewriter``: the vlmguard rewriter as a LangChain Runnable, for ``rewriter | vlm``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, MessageLikeRepresentation
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict

from vlmguard_plugins import Rewriter, RewriterSettings, load_backend
from vlmguard_plugins.conversation import Conversation, GuardedConversation, TextPart, Turn
from vlmguard_plugins.errors import InputError
from vlmguard_plugins.types import FailurePolicyName

from .conversation import (
    as_messages,
    from_conversation,
    prompt_variables_turn,
    result_summary,
    to_conversation,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from .speculative import VLMGuardSpeculativeChatModel

REWRITE_EVENT = "vlmguard_rewrite"
"""Name of the custom callback event sent after every rewrite (data: the result as a dict)."""

GuardInput = LanguageModelInput | dict[str, Any]
"""What the guard accepts and returns: what a chat model accepts, or a dict of prompt variables."""


@dataclass(frozen=True)
class _TakenApart:
    """A LangChain input as a core conversation, and how to build the output from its guard."""

    conversation: Conversation
    rebuild: Callable[[GuardedConversation], Any]


# Declared ``[Any, Any]`` for the type checker: the guard returns the kind it was given,
# which a fixed pair of types cannot say, and with ``GuardInput`` on both sides neither
# ``guard | chat_model`` nor ``prompt | guard`` would type-check.  ``InputType`` and
# ``OutputType`` still report ``GuardInput``, so schemas and tracing are exact.
class VLMGuardRewriter(RunnableSerializable[Any, Any]):
    """Rewrites the user's prompt before a vision-language model sees it.

    Put it in front of a chat model: it accepts what a chat model accepts and returns
    the same kind, so ``guard | vlm`` and ``prompt | guard | vlm`` both work.

    - ``str``, ``StringPromptValue``: the text is rewritten.
    - a list of messages, ``ChatPromptValue``: the text of the last human message is
      rewritten; the earlier turns' text and the images of every turn are given to
      the rewriter, and every block stays where it was, the very same object.
    - a ``dict`` of prompt variables: the ``input_key`` value is rewritten (text or a
      list of messages), with images from the optional ``image_key`` value; every
      other variable (retrieved context, for example) passes untouched and unread.

    Only the user's own words should be rewritten, so in a retrieval chain put the
    guard on the question *before* the prompt template (dict input with
    ``input_key``).  After a template the guard cannot tell the user's words from the
    template's or the context: it reads and rewrites the whole last human message.

    The guard converts its input to the core's conversation and calls
    :meth:`vlmguard_plugins.Rewriter.aguard`, so coverage and write-back are the
    core's: an image-only message gets the rewrite as a text block after its images.
    Input the guard cannot check (an audio, video or file block, an image given by a
    file id, a refused or unreadable image, a conversation over the limits) raises a
    typed :class:`~vlmguard_plugins.errors.InputError` whatever the failure policy,
    and the model is never called; a failure of the rewriter itself goes to the
    failure policy.  A message list with no human message and no image has nothing to
    rewrite and passes unchanged.

    The rewrite's outcome (analysis, risk, fallback) travels with the output: in the
    rewritten message's ``response_metadata["vlmguard"]`` (read it back with
    :func:`~langchain_vlmguard.get_rewrite_result`), under ``result_key`` in a dict, and
    in a ``vlmguard_rewrite`` custom callback event.

    Images taken from framework input are never read from local paths or ``file://``
    URLs; http(s) URLs follow the rewriter's URL policy.

    Example:
        .. code-block:: python

            from langchain_vlmguard import VLMGuardRewriter

            guard = VLMGuardRewriter.from_backend(
                "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1", timeout_s=10
            )
            chain = guard | vision_chat_model
            answer = chain.invoke([HumanMessage(content=[text_block, image_block])])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    rewriter: Rewriter
    """The core rewriter that does the work (backend, limits, URL policy, cache)."""
    on_error: FailurePolicyName | None = None
    """Failure policy for this runnable (``shield``, ``raise``, ``passthrough``,
    ``block``); ``None`` keeps the rewriter's own.  Make it configurable per call with
    ``configurable_fields(on_error=ConfigurableField(id="on_error"))``."""
    input_key: str = "input"
    """For dict input: the key holding the user's text (or list of messages)."""
    image_key: str | None = None
    """For dict input: the key holding the image(s), if any."""
    result_key: str | None = None
    """For dict input: when set, the :class:`~vlmguard_plugins.RewriteResult` is added
    to the output under this key."""

    @property
    def InputType(self) -> Any:  # noqa: N802 (LangChain's name)
        """What the guard accepts: what a chat model accepts, or a dict of prompt variables."""
        return GuardInput

    @property
    def OutputType(self) -> Any:  # noqa: N802 (LangChain's name)
        """What the guard returns: the same kind of value it was given."""
        return GuardInput

    @classmethod
    def from_settings(
        cls,
        settings: RewriterSettings | Mapping[str, Any],
        *,
        input_key: str = "input",
        image_key: str | None = None,
        result_key: str | None = None,
        name: str | None = None,
    ) -> VLMGuardRewriter:
        """Build the guard and its rewriter from :class:`~vlmguard_plugins.RewriterSettings`.

        ``settings`` may also be a mapping of the same fields (a YAML section, say).

        Example::

            settings = RewriterSettings(
                backend="openai", model="vlmguard-r1", base_url="http://localhost:8000/v1",
                on_error="block", timeout_s=10,
            )
            guard = VLMGuardRewriter.from_settings(settings)

        Raises:
            ConfigurationError: an invalid setting, an unknown backend.
        """
        if not isinstance(settings, RewriterSettings):
            settings = RewriterSettings.from_mapping(settings, where="VLMGuardRewriter settings")
        return cls(
            rewriter=settings.build(),
            input_key=input_key,
            image_key=image_key,
            result_key=result_key,
            name=name,
        )

    @classmethod
    def from_backend(
        cls,
        backend: str,
        *,
        input_key: str = "input",
        image_key: str | None = None,
        result_key: str | None = None,
        name: str | None = None,
        rewriter_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> VLMGuardRewriter:
        """Build the guard and its rewriter from a backend name and flat options.

        An option named like a :class:`~vlmguard_plugins.RewriterSettings` field
        (``model``, ``base_url``, ``api_key``, ``on_error``, ``timeout_s``,
        ``cache_size``, ``max_images``, ``allow_remote_images``...) sets it; any other
        option goes to the backend (``load_backend``).  ``rewriter_options`` is the
        older spelling of the same settings (also accepting ``image_limits`` and
        ``url_policy`` objects) and is deprecated.

        Example::

            VLMGuardRewriter.from_backend(
                "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1",
                timeout_s=10, on_error="block",
            )

        Raises:
            ConfigurationError: an invalid setting, an unknown backend.
        """
        settings = settings_from_options(backend, options)
        if rewriter_options is None:
            return cls.from_settings(
                settings, input_key=input_key, image_key=image_key, result_key=result_key, name=name
            )
        warnings.warn(
            "rewriter_options is deprecated: pass the settings as keyword arguments, "
            "for example from_backend('openai', model=..., timeout_s=10)",
            DeprecationWarning,
            stacklevel=2,
        )
        rewriter = Rewriter(
            load_backend(settings.backend, **settings.backend_kwargs()),
            **{**settings.rewriter_options(), **rewriter_options},
        )
        return cls(
            rewriter=rewriter,
            input_key=input_key,
            image_key=image_key,
            result_key=result_key,
            name=name,
        )

    def speculative(
        self, model: BaseChatModel, *, max_held_chunks: int | None = None
    ) -> VLMGuardSpeculativeChatModel:
        """``model`` guarded in speculative mode: once the guard has checked the messages,
        called on the original ones while the rewriter model reads them, its answer held
        until the verdict and released only for a benign, unchanged request (see
        :class:`VLMGuardSpeculativeChatModel`).

        Raises:
            TypeError: ``model`` is not a chat model (a ``.bind(...)`` or ``.with_retry()``
                of one: bind them on the result instead).

        Example::

            vlm = guard.speculative(ChatOpenAI(model="gpt-4o-mini"))
            answer = await vlm.ainvoke(messages)
        """
        from .speculative import VLMGuardSpeculativeChatModel

        return VLMGuardSpeculativeChatModel(
            model=model, guard=self, max_held_chunks=max_held_chunks
        )

    # -- Runnable ------------------------------------------------------------------------

    # The guard returns the kind it was given: these overloads tell the type checker.
    @overload
    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> str: ...
    @overload
    def invoke(
        self, input: StringPromptValue, config: RunnableConfig | None = None, **kwargs: Any
    ) -> StringPromptValue: ...
    @overload
    def invoke(
        self, input: PromptValue, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPromptValue: ...
    @overload
    def invoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]: ...
    @overload
    def invoke(
        self,
        input: Sequence[MessageLikeRepresentation],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> list[BaseMessage]: ...
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Rewrite ``input`` and return it in the same form.

        Extra keyword arguments (such as a chat model's ``stop``) are accepted, so the
        guard can stand where a chat model's arguments are passed, and ignored.

        Raises:
            InputError: input the guard cannot take or cannot check (see the class).
            VLMGuardError: a failed rewrite, under the ``raise`` failure policy.
        """
        return self._call_with_config(self._guard, input, config, run_type="chain")

    @overload
    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> str: ...
    @overload
    async def ainvoke(
        self, input: StringPromptValue, config: RunnableConfig | None = None, **kwargs: Any
    ) -> StringPromptValue: ...
    @overload
    async def ainvoke(
        self, input: PromptValue, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ChatPromptValue: ...
    @overload
    async def ainvoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]: ...
    @overload
    async def ainvoke(
        self,
        input: Sequence[MessageLikeRepresentation],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> list[BaseMessage]: ...
    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Rewrite ``input`` through the rewriter's asynchronous path (see :meth:`invoke`)."""
        return await self._acall_with_config(self._aguard, input, config, run_type="chain")

    # -- steps ---------------------------------------------------------------------------

    def _guard(
        self, value: GuardInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> GuardInput:
        taken = self._take_apart(value)
        guarded = self.rewriter.guard(
            taken.conversation, on_error=self.on_error, allow_local_files=False
        )
        if guarded.result is not None and _has_listeners(run_manager):
            dispatch_custom_event(REWRITE_EVENT, result_summary(guarded.result), config=config)
        return taken.rebuild(guarded)

    async def _aguard(
        self,
        value: GuardInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> GuardInput:
        taken = self._take_apart(value)
        guarded = await self.rewriter.aguard(
            taken.conversation, on_error=self.on_error, allow_local_files=False
        )
        if guarded.result is not None and _has_listeners(run_manager):
            await adispatch_custom_event(
                REWRITE_EVENT, result_summary(guarded.result), config=config
            )
        return taken.rebuild(guarded)

    def _take_apart(self, value: GuardInput) -> _TakenApart:
        """Convert any input the guard accepts; the rebuild gives the same kind back.

        Raises:
            InputError: the input is of a kind the guard does not accept, or (for a
                dict) lacks ``input_key``.
        """
        if isinstance(value, str):
            return _TakenApart(_text_conversation(value), _guarded_text)
        if isinstance(value, StringPromptValue):
            return _TakenApart(
                _text_conversation(value.text),
                lambda guarded: StringPromptValue(text=_guarded_text(guarded)),
            )
        if isinstance(value, PromptValue):
            return _TakenApart(
                to_conversation(value.to_messages()),
                lambda guarded: ChatPromptValue(messages=_guarded_messages(guarded)),
            )
        if isinstance(value, Mapping):
            return self._take_apart_variables(value)
        if isinstance(value, Sequence):
            return _TakenApart(to_conversation(as_messages(value)), _guarded_messages)
        raise InputError(
            f"cannot guard an input of type {type(value).__name__}; pass a string, a list of "
            "messages, a prompt value or a dict of prompt variables"
        )

    def _take_apart_variables(self, value: Mapping[str, Any]) -> _TakenApart:
        """A dict of prompt variables: only ``input_key`` (and ``image_key``) is the user's."""
        key = self.input_key
        if key not in value:
            raise InputError(
                f"the input dict has no {key!r} key (keys: {', '.join(map(str, value))}); "
                "set input_key to the variable that holds the user's text"
            )
        field = value[key]
        if isinstance(field, str):
            images = value.get(self.image_key) if self.image_key else None
            conversation = Conversation((prompt_variables_turn(field, images),))
            return _TakenApart(
                conversation,
                lambda guarded: self._with_result({**value, key: _guarded_text(guarded)}, guarded),
            )
        if isinstance(field, Sequence):
            return _TakenApart(
                to_conversation(as_messages(field)),
                lambda guarded: self._with_result(
                    {**value, key: _guarded_messages(guarded)}, guarded
                ),
            )
        raise InputError(
            f"the input dict's {key!r} value is a {type(field).__name__}; "
            "expected the user's text or a list of messages"
        )

    def _with_result(self, output: dict[str, Any], guarded: GuardedConversation) -> dict[str, Any]:
        if self.result_key is not None:
            output[self.result_key] = guarded.result
        return output


def settings_from_options(backend: str, options: Mapping[str, Any]) -> RewriterSettings:
    """Settings from a backend name and flat options: settings fields by name, the rest
    as backend options (:meth:`RewriterSettings.from_options`).

    Raises:
        ConfigurationError: an invalid setting.
    """
    return RewriterSettings.from_options(
        backend, options, where=f"settings of the {backend!r} guard"
    )


def _has_listeners(
    run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
) -> bool:
    """Whether any callback handler (a tracer, ``astream_events``, yours) watches the run.

    Dispatching an event configures a callback manager, which costs more than the rest
    of the adapter together; without a handler nobody would receive the event.
    """
    return bool(run_manager.handlers or run_manager.inheritable_handlers)


def _text_conversation(text: str) -> Conversation:
    return Conversation((Turn("user", (TextPart(text),), text_only=True),))


def _guarded_text(guarded: GuardedConversation) -> str:
    """The user's text after the guard: the first text part of the (only) user turn."""
    for part in guarded.conversation.turns[0].parts:
        if isinstance(part, TextPart):
            return part.text
    return ""


def _guarded_messages(guarded: GuardedConversation) -> list[Any]:
    return from_conversation(guarded.conversation, result=guarded.result, target=guarded.target)


__all__ = ["REWRITE_EVENT", "GuardInput", "VLMGuardRewriter"]
