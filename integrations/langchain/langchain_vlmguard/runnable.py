"""``VLMGuardRewriter``: the vlmguard rewriter as a LangChain Runnable, for ``rewriter | vlm``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict

from vlmguard_plugins import Rewriter, RewriteResult, load_backend
from vlmguard_plugins.policy import apply_failure_policy
from vlmguard_plugins.types import FailurePolicyName

from .content import GuardedInput, guard_input, result_summary

REWRITE_EVENT = "vlmguard_rewrite"
"""Name of the custom callback event sent after every rewrite (data: the result as a dict)."""

GuardInput = LanguageModelInput | dict[str, Any]
"""What the guard accepts and returns: what a chat model accepts, or a dict of prompt variables."""


class VLMGuardRewriter(RunnableSerializable[GuardInput, GuardInput]):
    """Rewrites the user's prompt before a vision-language model sees it.

    Put it in front of a chat model: it accepts what a chat model accepts and returns
    the same kind, so ``guard | vlm`` and ``prompt | guard | vlm`` both work.

    - ``str``, ``StringPromptValue``: the text is rewritten.
    - a list of messages, ``ChatPromptValue``: the text of the last human message is
      rewritten, with the earlier turns as context; its image blocks (OpenAI
      ``image_url``, LangChain ``image`` v1 and v0, Anthropic ``source``) are analysed
      and kept, untouched, where they were.
    - a ``dict`` of prompt variables: the ``input_key`` value is rewritten (text or a
      list of messages), with images from the optional ``image_key`` value.

    The rewrite's outcome (analysis, risk, fallback) travels with the output: in the
    rewritten message's ``response_metadata["vlmguard"]`` (read it back with
    :func:`~langchain_vlmguard.get_rewrite_result`), under ``result_key`` in a dict, and
    in a ``vlmguard_rewrite`` custom callback event.

    Images taken from framework input are never read from local paths or ``file://``
    URLs; http(s) URLs follow the rewriter's :class:`~vlmguard_plugins.URLPolicy`.

    Example:
        .. code-block:: python

            from langchain_vlmguard import VLMGuardRewriter

            guard = VLMGuardRewriter.from_backend(
                "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
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

    @classmethod
    def from_backend(
        cls,
        backend: str,
        *,
        rewriter_options: Mapping[str, Any] | None = None,
        on_error: FailurePolicyName | None = None,
        input_key: str = "input",
        image_key: str | None = None,
        result_key: str | None = None,
        name: str | None = None,
        **backend_options: Any,
    ) -> VLMGuardRewriter:
        """Build the guard and its :class:`~vlmguard_plugins.Rewriter` from a backend name.

        ``backend_options`` go to :func:`~vlmguard_plugins.load_backend` (for example
        ``model`` and ``base_url``); ``rewriter_options`` to the ``Rewriter`` (for
        example ``timeout_s``, ``cache_size`` or ``url_policy``).

        Example::

            VLMGuardRewriter.from_backend(
                "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1",
                rewriter_options={"timeout_s": 10}, on_error="block",
            )
        """
        rewriter = Rewriter(load_backend(backend, **backend_options), **(rewriter_options or {}))
        return cls(
            rewriter=rewriter,
            on_error=on_error,
            input_key=input_key,
            image_key=image_key,
            result_key=result_key,
            name=name,
        )

    # -- Runnable ------------------------------------------------------------------------

    def invoke(
        self, input: GuardInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> GuardInput:
        """Rewrite ``input`` and return it in the same form.

        Extra keyword arguments (such as a chat model's ``stop``) are accepted, so the
        guard can stand where a chat model's arguments are passed, and ignored.
        """
        return self._call_with_config(self._guard, input, config, run_type="chain")

    async def ainvoke(
        self, input: GuardInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> GuardInput:
        """Rewrite ``input`` through the rewriter's asynchronous path."""
        return await self._acall_with_config(self._aguard, input, config, run_type="chain")

    # -- steps ---------------------------------------------------------------------------

    def _guard(self, value: GuardInput, config: RunnableConfig) -> GuardInput:
        guarded = self._take_apart(value)
        result = self._fallback(guarded) or self.rewriter.rewrite(
            guarded.request, on_error=self.on_error
        )
        dispatch_custom_event(REWRITE_EVENT, result_summary(result), config=config)
        return self._put_back(guarded, result)

    async def _aguard(self, value: GuardInput, config: RunnableConfig) -> GuardInput:
        guarded = self._take_apart(value)
        result = self._fallback(guarded) or await self.rewriter.arewrite(
            guarded.request, on_error=self.on_error
        )
        await adispatch_custom_event(REWRITE_EVENT, result_summary(result), config=config)
        return self._put_back(guarded, result)

    def _take_apart(self, value: GuardInput) -> GuardedInput:
        return guard_input(value, input_key=self.input_key, image_key=self.image_key)

    def _fallback(self, guarded: GuardedInput) -> RewriteResult | None:
        """The failure policy's result when the input holds an image the guard cannot see."""
        if guarded.image_error is None:
            return None
        policy = self.on_error or self.rewriter.on_error
        return apply_failure_policy(policy, guarded.request.text, guarded.image_error)

    def _put_back(self, guarded: GuardedInput, result: RewriteResult) -> GuardInput:
        output = guarded.rebuild(result)
        if self.result_key is not None and isinstance(output, dict):
            output[self.result_key] = result
        return output
