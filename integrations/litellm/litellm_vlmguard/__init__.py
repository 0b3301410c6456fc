"""litellm-vlmguard: the vlmguard-plugins rewriter as a LiteLLM proxy guardrail.

Put :class:`VLMGuardGuardrail` in front of any vision-language model the proxy serves;
before each chat completion, the rewriter reads the request's text and images (every
turn) and the user's text is replaced by its safe, still useful rewrite::

    # config.yaml
    guardrails:
      - guardrail_name: vlmguard
        litellm_params:
          guardrail: litellm_vlmguard.VLMGuardGuardrail
          mode: pre_call
          default_on: true
          backend: openai
          model: vlmguard-r1
          api_base: http://localhost:8000/v1
          on_error: block

Input the guard cannot check, a ``block`` result and a verdict at or above
``block_risk`` are answered with an HTTP 400; the model is never called.
"""

from __future__ import annotations

from .guardrail import DEFAULT_GUARDRAIL_NAME, VLMGuardGuardrail
from .refusals import GuardrailRefusal, GuardrailStartupError
from .settings import CHAT_CALL_TYPES, GuardrailSettings

__all__ = [
    "CHAT_CALL_TYPES",
    "DEFAULT_GUARDRAIL_NAME",
    "GuardrailRefusal",
    "GuardrailSettings",
    "GuardrailStartupError",
    "VLMGuardGuardrail",
]
