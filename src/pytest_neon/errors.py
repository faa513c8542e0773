"""The exceptions pytest-neon raises; every message is redacted of secrets."""

from __future__ import annotations

from pytest_neon.redact import redact


class NeonError(Exception):
    """Base class of every pytest-neon error."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        """The (redacted) message."""
        return str(self.args[0]) if self.args else ""


class NeonConfigError(NeonError):
    """A setting is missing or invalid; the message names the flag, env var or ini key."""


class NeonAPIError(NeonError):
    """Neon's API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str = "",
        neon_message: str = "",
        request_id: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.neon_message = redact(neon_message)
        self.request_id = request_id
        self.method = method
        self.path = path
        super().__init__(message)

    def with_message(self, message: str) -> NeonAPIError:
        """The same error (type, status, Neon's details) with another message."""
        return type(self)(
            message,
            status=self.status,
            code=self.code,
            neon_message=self.neon_message,
            request_id=self.request_id,
            method=self.method,
            path=self.path,
        )


class NeonAuthError(NeonAPIError):
    """The API key was refused (401) or lacks permission (403)."""


class NeonNotFoundError(NeonAPIError):
    """The project, branch, role or operation does not exist (404)."""


class NeonConflictError(NeonAPIError):
    """A conflicting resource or operation (409, 423 after retries)."""


class NeonLimitError(NeonAPIError):
    """A plan limit such as BRANCHES_LIMIT_EXCEEDED (422)."""


class NeonTimeoutError(NeonError):
    """Neon did not answer, or an operation did not finish, before the deadline."""


class NeonOperationError(NeonError):
    """A Neon operation ended as ``failed`` or ``error``."""

    def __init__(self, message: str, *, operation_id: str, branch_id: str, action: str) -> None:
        self.operation_id = operation_id
        self.branch_id = branch_id
        self.action = action
        super().__init__(message)


class NeonBranchGoneError(NeonError):
    """A branch the run relies on was deleted outside the run (or expired)."""

    def __init__(self, message: str, *, branch_id: str) -> None:
        self.branch_id = branch_id
        super().__init__(message)


def api_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the Neon API itself is out of reach, not one call or branch.

    True for a call that gave up on timeouts, network errors, 5xx or 429 answers, and for
    a refused key: every later call would wait as long and fail the same way.
    """
    if isinstance(exc, NeonTimeoutError):
        return True
    return isinstance(exc, NeonAPIError) and (exc.status in (401, 429) or exc.status >= 500)
