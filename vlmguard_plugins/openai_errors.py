"""The OpenAI API's error body, built in one place.

Every OpenAI-compatible server answers a failed request with::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}

The official SDKs read ``message``, ``type``, ``param`` and ``code`` from it to raise
their usual exceptions (``BadRequestError``, ``RateLimitError``...), so the gateway and
the test server build it with :func:`error_body` and nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["error_body", "error_type_for_status"]

_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for_status(status: int) -> str:
    """The ``type`` the OpenAI API gives an error with this HTTP status."""
    if status in _TYPE_OF_STATUS:
        return _TYPE_OF_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The JSON body of an OpenAI-style error response."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
