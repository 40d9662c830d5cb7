"""The errors a cubby call raises: one class per error code of the API.

Every error the server reports arrives as the envelope
``{"code", "message", "request_id"}`` and becomes the subclass of
:class:`CubbyError` named for its code, so callers can catch exactly what
they handle (``except cubby.NotFound``) or everything (``except CubbyError``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Type


class CubbyError(Exception):
    """Any failure of a cubby call.

    ``code`` is the API's error code ("not_found", ...), ``status`` the HTTP
    status (0 when the server could not be reached), ``request_id`` the
    server's id for the request (quote it when reporting a bug).
    """

    code = "error"

    def __init__(self, message: str, *, status: int = 0, request_id: Optional[str] = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} (request {self.request_id})" if self.request_id else self.message


class BadRequest(CubbyError):
    """400: the request was malformed or a value is invalid."""
    code = "bad_request"


class Unauthorized(CubbyError):
    """401: a TCP server needs a valid bearer token."""
    code = "unauthorized"


class Forbidden(CubbyError):
    """403: the caller may not do this."""
    code = "forbidden"


class NotFound(CubbyError):
    """404: no such box, image, exec or route."""
    code = "not_found"


class RequestTimeout(CubbyError):
    """408: the server gave up waiting (on the client, or a backstop in a box)."""
    code = "timeout"


class Conflict(CubbyError):
    """409: the box's state forbids this (e.g. removing a running box), or a name is taken."""
    code = "conflict"


class TooLarge(CubbyError):
    """413: a body or a value is over the server's limit."""
    code = "too_large"


class TooManyRequests(CubbyError):
    """429: the server is at its limit of concurrent work."""
    code = "too_many_requests"


class InternalError(CubbyError):
    """500: the server or cubby failed."""
    code = "internal"


class Unavailable(CubbyError):
    """503: the server cannot serve now (shutting down, or a dependency is missing)."""
    code = "unavailable"


class ConnectionFailed(CubbyError):
    """The server could not be reached, or the connection broke mid-call."""
    code = "connection_failed"


class ExecTimeout(CubbyError):
    """Raised only by ``ExecStream.wait(timeout=...)`` when the wait itself times out
    (a process that outlives its own ``timeout`` is not an error: its result
    has ``status == "timed_out"``)."""
    code = "exec_wait_timeout"


_BY_CODE: Dict[str, Type[CubbyError]] = {
    cls.code: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, RequestTimeout, Conflict, TooLarge,
                TooManyRequests, InternalError, Unavailable)
}
_BY_STATUS: Dict[int, Type[CubbyError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 408: RequestTimeout,
    409: Conflict, 413: TooLarge, 429: TooManyRequests, 500: InternalError, 503: Unavailable,
}


def from_envelope(status: int, body: Any) -> CubbyError:
    """The exception for an error response: its envelope's code decides the
    class; a body that is not an envelope (a proxy's page) falls back to the
    HTTP status."""
    if isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str):
        cls = _BY_CODE.get(body["code"]) or _BY_STATUS.get(status, CubbyError)
        rid = body.get("request_id") if isinstance(body.get("request_id"), str) else None
        return cls(body["message"], status=status, request_id=rid, code=body["code"])
    cls = _BY_STATUS.get(status, CubbyError)
    text = body if isinstance(body, str) else repr(body)
    return cls(f"HTTP {status}: {text[:200]}", status=status)
