"""The API's error answers: :class:`ApiError` (HTTP status, Neon error ``code``, message)
and the ones the emulator gives often (400, 422, the 423 of a conflicting operation, and
the 413 and 501 of a request body the HTTP server refuses)."""

from __future__ import annotations

CONFLICTING_OPERATIONS = (
    "project already has running conflicting operations, scheduling of new ones is prohibited"
)


class ApiError(Exception):
    """An error answer of the API: HTTP status, Neon error ``code`` and message."""

    def __init__(
        self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def locked() -> ApiError:
    """The 423 Neon answers while a conflicting operation runs."""
    return ApiError(423, CONFLICTING_OPERATIONS)


def bad_request(message: str) -> ApiError:
    """A 400: the request is malformed or asks for what the emulator does not support."""
    return ApiError(400, message)


def unprocessable(message: str, code: str = "") -> ApiError:
    """A 422: the request is well-formed but not allowed in the project's current state."""
    return ApiError(422, message, code)


def too_large(limit: int) -> ApiError:
    """A 413: the request body is larger than the emulator accepts."""
    return ApiError(413, f"the request body is larger than {limit} bytes")


def not_implemented(message: str) -> ApiError:
    """A 501: the request uses an HTTP feature the emulator does not implement."""
    return ApiError(501, message)
