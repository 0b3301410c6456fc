"""Errors the gateway answers with, in the OpenAI API's JSON shape.

Every error a client sees looks like the OpenAI API's own::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "..."}}

so the official SDKs raise their usual exceptions (``BadRequestError``,
``AuthenticationError``...) with the message intact.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from ..openai_errors import error_body


class GatewayError(Exception):
    """A request the gateway answers with an error status and an OpenAI-style body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers

    def response(self) -> JSONResponse:
        """The error as the JSON response a client receives."""
        return error_response(
            self.status_code,
            self.message,
            type=self.type,
            code=self.code,
            param=self.param,
            headers=self.headers,
        )


def error_response(
    status_code: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-style error body with ``status_code``."""
    body = error_body(message, type=type, code=code, param=param)
    return JSONResponse(body, status_code=status_code, headers=headers)


def invalid_request(message: str, *, code: str, param: str | None = None) -> GatewayError:
    """A 400 for a request the client must fix."""
    return GatewayError(400, message, code=code, param=param)


def upstream_unavailable(message: str) -> GatewayError:
    """A 502: the upstream could not be reached or answered nonsense."""
    return GatewayError(502, message, type="upstream_error", code="upstream_unavailable")


def upstream_timeout(message: str) -> GatewayError:
    """A 504: the upstream did not answer in time."""
    return GatewayError(504, message, type="upstream_error", code="upstream_timeout")


__all__ = [
    "GatewayError",
    "error_response",
    "invalid_request",
    "upstream_timeout",
    "upstream_unavailable",
]
