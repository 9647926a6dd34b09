"""The one error a request handler raises: an HTTP status, the field at fault and a message naming the problem."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field, "status": self.status}


def as_request_error(error: Exception) -> RequestError:
    """Bad input found by the core is the client's fault (400); anything else is ours (500)."""
    from robovla.errors import RobovlaError

    if isinstance(error, RequestError):
        return error
    if isinstance(error, RobovlaError):
        return RequestError(400, str(error))
    return RequestError(500, f"internal error: {type(error).__name__}: {error}")
