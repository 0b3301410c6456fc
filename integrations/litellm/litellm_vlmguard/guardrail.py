"""``VLMGuardGuardrail``: the vlmguard rewriter as a LiteLLM proxy guardrail (``pre_call``).

Before the proxy calls the model, the request's ``messages`` become the core
:class:`~vlmguard_plugins.conversation.Conversation`, go through
:meth:`~vlmguard_plugins.Rewriter.aguard` (every text and every image of every turn read
by the rewriter, the last user message's text rewritten) and come back as message
dicts.  The guardrail reads no message content itself: what is checked, what is
refused and where the rewrite goes are the core's decisions, the same as at every
other entry point.  Images are guarded like text; a part the guard cannot read
(audio, a file, an image by file id) refuses the request instead of passing unseen.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litellm.caching import DualCache
from litellm.integrations.custom_guardrail import CustomGuardrail, log_guardrail_information
from litellm.proxy._types import UserAPIKeyAuth
from litellm.types.guardrails import GuardrailEventHooks

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conversation import from_openai, to_openai
from vlmguard_plugins.errors import InputError, VLMGuardError
from vlmguard_plugins.policy import fallback_error_type
from vlmguard_plugins.telemetry import Telemetry
from vlmguard_plugins.types import RewriteResult

from .refusals import (
    GuardrailRefusal,
    GuardrailStartupError,
    blocked_refusal,
    call_type_refusal,
    input_refusal,
    unavailable_refusal,
    verdict_of,
)
from .settings import CHAT_CALL_TYPES, GuardrailSettings, litellm_option_names

logger = logging.getLogger("litellm_vlmguard")

DEFAULT_GUARDRAIL_NAME = "vlmguard"


class VLMGuardGuardrail(CustomGuardrail):
    """A LiteLLM proxy guardrail that rewrites multimodal prompts before the model sees them.

    Enable it in the proxy's ``config.yaml`` (``guardrail:
    litellm_vlmguard.VLMGuardGuardrail``, ``mode: pre_call``); its other
    ``litellm_params`` are :class:`~litellm_vlmguard.GuardrailSettings`.  In code, pass a
    ready :class:`~vlmguard_plugins.Rewriter` or settings instead.

    A request is answered with an HTTP 400 (and the model is never called) when it
    holds input the guard cannot check, when it has no user message, when the failure
    policy ``block`` answered, or when the verdict reaches ``block_risk``.  Under the
    ``raise`` policy a rewriter failure is a 503.  Every other request goes on with the
    rewrite written back, images and every other field in place.

    The verdict goes to the proxy's logging callbacks; a failure's reason is recorded
    as its error class unless ``capture_message_content`` is on (the setting, else
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), since its message may
    quote the request.

    Args:
        rewriter: the rewriter to use; built from the settings when omitted.
        settings: the settings; read from the LiteLLM options when omitted.
        **options: what LiteLLM passes: ``guardrail_name``, ``event_hook``,
            ``default_on``, its other guardrail options, and the settings by name.

    Raises:
        GuardrailStartupError: an unknown or invalid option (its cause is the
            :class:`~vlmguard_plugins.errors.ConfigurationError`), or a mode other than
            ``pre_call``: the guardrail changes the request, which no other mode can.
            It stops the proxy: LiteLLM would start without a guardrail whose
            constructor raised a ``ValueError``, and forward requests unguarded.
    """

    def __init__(
        self,
        rewriter: Rewriter | None = None,
        *,
        settings: GuardrailSettings | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("guardrail_name", DEFAULT_GUARDRAIL_NAME)
        options.setdefault("event_hook", GuardrailEventHooks.pre_call)
        name = str(options["guardrail_name"])
        try:
            if settings is None:
                settings = GuardrailSettings.from_litellm_params(options, guardrail_name=name)
            litellm_options = {
                key: value
                for key, value in options.items()
                if key in litellm_option_names() and key not in GuardrailSettings.model_fields
            }
            super().__init__(
                supported_event_hooks=[GuardrailEventHooks.pre_call], **litellm_options
            )
            built = rewriter if rewriter is not None else settings.build()
        except (ValueError, TypeError) as exc:
            # The proxy would log these and start without the guardrail: fail closed.
            raise GuardrailStartupError(f"the {name!r} guardrail cannot start: {exc}") from exc
        self.settings = settings
        self.rewriter = built
        # The same switch as the rewriter's spans: without it, a failure is logged by
        # its error class only, since its message may quote the request.
        self.capture_content = Telemetry(
            capture_message_content=settings.capture_message_content
        ).captures_content()

    @log_guardrail_information
    async def async_pre_call_hook(
        self,
        user_api_key_dict: UserAPIKeyAuth,
        cache: DualCache,
        data: dict,
        call_type: Any,
    ) -> dict:
        """Guard the request's ``messages``; return the request with the rewrite in place.

        Raises:
            GuardrailRefusal: 400 for a refused or blocked request, 503 for a rewriter
                failure under the ``raise`` policy.
        """
        kind = str(getattr(call_type, "value", call_type))
        if kind not in CHAT_CALL_TYPES:
            if kind in self.settings.allow_call_types:
                return data
            raise call_type_refusal(kind)
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise GuardrailRefusal(
                400, "the request has no list of messages to check", code="invalid_request"
            )
        started = time.perf_counter()
        try:
            guarded = await self.rewriter.aguard(from_openai(messages))
        except InputError as exc:
            raise input_refusal(exc) from exc
        except VLMGuardError as exc:
            # Only the raise policy lets a rewriter failure out of aguard.
            raise unavailable_refusal(exc) from exc
        result = guarded.result
        if result is None:
            # No user turn and no image: nothing the rewriter read, nothing to vouch for.
            raise GuardrailRefusal(
                400, "the conversation has no user message to check", code="invalid_request"
            )
        if result.blocked or self._over_block_risk(result):
            raise blocked_refusal(result, threshold=not result.blocked)
        if guarded.dropped:
            logger.info("dropped unsupported parts before forwarding: %s", guarded.dropped)
        if result.fallback is not None:
            reason = (
                result.fallback if self.capture_content else fallback_error_type(result.fallback)
            )
            logger.warning("failure policy %r answered: %s", result.action, reason)
        data["messages"] = to_openai(guarded.conversation)
        self._record(data, result, started)
        return data

    def _over_block_risk(self, result: RewriteResult) -> bool:
        threshold = self.settings.block_risk
        return threshold is not None and result.risk is not None and result.risk >= threshold

    def _record(self, data: dict, result: RewriteResult, started: float) -> None:
        # The proxy's logging callbacks (Langfuse, OpenTelemetry, spend logs) read the
        # guardrail's record from the request; the verdict, not the prompt, goes there.
        ended = time.perf_counter()
        self.add_standard_logging_guardrail_information_to_request_data(
            guardrail_json_response=verdict_of(result, include_detail=self.capture_content),
            request_data=data,
            guardrail_status="guardrail_intervened" if result.changed else "success",
            duration=ended - started,
            event_type=GuardrailEventHooks.pre_call,
            guardrail_provider="vlmguard",
        )

    async def aclose(self) -> None:
        """Close the rewriter's backend (its HTTP connections)."""
        await self.rewriter.aclose()


__all__ = ["DEFAULT_GUARDRAIL_NAME", "VLMGuardGuardrail"]
