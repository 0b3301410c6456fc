"""One hierarchy of typed errors for everything vlmguard-plugins raises.

Catch :class:`VLMGuardError` for all of them, or a subclass for one kind.
Input errors also subclass :class:`ValueError` so code that already guards
against bad values keeps working; :func:`input_error_reply` says how an HTTP API
answers one (status, OpenAI-style ``code`` and ``param``), the same for every server
built on the guard.
"""

from __future__ import annotations

from dataclasses import dataclass


class VLMGuardError(Exception):
    """Base class of every error raised by vlmguard-plugins."""


class ConfigurationError(VLMGuardError, ValueError):
    """A setting or an argument is invalid (unknown backend, bad policy name...)."""


# --- inputs -------------------------------------------------------------------------


class InputError(VLMGuardError, ValueError):
    """The user's input (text, image, history) was refused."""


class TextTooLongError(InputError):
    """The text or the conversation history is over the configured limit."""


class UnsupportedContentError(InputError):
    """A message holds a part the guard cannot check (audio, video, a file, an unknown type).

    The guard never forwards content it has not seen: such a request is refused unless
    the ``unsupported_content="drop"`` setting removes these parts instead.
    ``part_type`` names the refused part's type, ``role`` and ``message_index`` the
    message it was in, ``part_index`` its position in that message.
    """

    def __init__(
        self,
        message: str,
        *,
        part_type: str = "",
        role: str = "",
        message_index: int | None = None,
        part_index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.part_type = part_type
        self.role = role
        self.message_index = message_index
        self.part_index = part_index


class ImageInputError(InputError):
    """An image could not be accepted: unreadable, too large, wrong format, bad source."""


class ImageDecodeError(ImageInputError):
    """The bytes are not a readable image (corrupt, truncated, not an image at all)."""


class ImageTooLargeError(ImageInputError):
    """The image is over a byte, pixel or side limit (for example a decompression bomb)."""


class UnsupportedImageFormatError(ImageInputError):
    """The image's format is not in the allow-list."""


class URLPolicyError(ImageInputError):
    """An image source was refused by the URL policy (scheme, address, local file)."""


class ImageFetchError(ImageInputError):
    """An allowed remote image could not be fetched (network error, status, timeout)."""


class InputCheckTimeoutError(ImageInputError):
    """The request's images could not be read and checked before the rewrite's deadline.

    Raised, whatever the failure policy, where the caller forwards the request's own
    images (the gateway, the adapters, speculative calls): an image the guard has not
    checked must not travel on under a fallback prompt.
    """


# --- backends -----------------------------------------------------------------------


class BackendError(VLMGuardError):
    """The rewriter model's backend failed."""


class ModelNotFoundError(BackendError):
    """The model's weights cannot be found (offline and not cached, or a wrong path)."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The backend did not answer within the timeout."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached (connection refused, every replica down)."""


class AuthenticationError(BackendError):
    """The backend refused the credentials (HTTP 401/403)."""


class RateLimitError(BackendError):
    """The backend kept answering 429 after every retry."""


class BadResponseError(BackendError):
    """The backend answered with something that is not a valid completion."""


# --- output -------------------------------------------------------------------------


class RewriteParseError(VLMGuardError):
    """The rewriter's output does not follow the output contract (no usable <rewrite>)."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class ContractViolationError(RewriteParseError):
    """The rewriter's answer parsed but contradicts itself.

    For example risk ``high`` with the user's text returned unchanged: forwarding the
    original under a high-risk verdict would fail open, so the failure policy decides.
    """


# --- how an HTTP API answers input errors ------------------------------------------


@dataclass(frozen=True)
class InputErrorReply:
    """How an OpenAI-compatible API refuses input the guard cannot check.

    ``status_code`` is the HTTP status; ``code`` and ``param`` are the OpenAI error
    body's fields (``param`` is the path of the refused part, ``messages`` when the
    guard does not know it); ``message`` is the error's text.
    """

    status_code: int
    code: str
    param: str
    message: str


def input_error_reply(error: InputError) -> InputErrorReply:
    """The HTTP status, error ``code`` and ``param`` a client gets for ``error``.

    Input errors are the client's to fix, so every one is a 400; the code names the
    kind (``unsupported_content``, ``invalid_image``, ``text_too_long``, else
    ``invalid_request``).
    """
    return InputErrorReply(
        status_code=400, code=_code_of(error), param=_param_of(error), message=str(error)
    )


def _code_of(error: InputError) -> str:
    if isinstance(error, UnsupportedContentError):
        return "unsupported_content"
    if isinstance(error, ImageInputError):
        return "invalid_image"
    if isinstance(error, TextTooLongError):
        return "text_too_long"
    return "invalid_request"


def _param_of(error: InputError) -> str:
    if isinstance(error, UnsupportedContentError) and error.message_index is not None:
        if error.part_index is None:
            return f"messages.{error.message_index}.content"
        return f"messages.{error.message_index}.content.{error.part_index}"
    return "messages"


__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadResponseError",
    "ConfigurationError",
    "ContractViolationError",
    "ImageDecodeError",
    "ImageFetchError",
    "ImageInputError",
    "ImageTooLargeError",
    "InputCheckTimeoutError",
    "InputError",
    "InputErrorReply",
    "ModelNotFoundError",
    "RateLimitError",
    "RewriteParseError",
    "TextTooLongError",
    "URLPolicyError",
    "UnsupportedContentError",
    "UnsupportedImageFormatError",
    "VLMGuardError",
    "input_error_reply",
]
