"""Waiting for Neon: operations to end, a new branch's endpoint to be active."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pytest_neon.api.transport import ApiTransport
from pytest_neon.api.types import CreatedBranch, Endpoint, Operation
from pytest_neon.errors import NeonError, NeonOperationError, NeonTimeoutError


class Waits:
    """Polls operations and endpoints, learning how long each kind of operation takes."""

    def __init__(
        self,
        http: ApiTransport,
        get_operation: Callable[[str, str], Operation],
        list_endpoints: Callable[[str, str], list[Endpoint]],
    ) -> None:
        self._http = http
        self._get_operation = get_operation
        self._list_endpoints = list_endpoints
        self._op_seconds: dict[str, float] = {}  # how long operations usually take, by kind

    def for_operations(
        self,
        project_id: str,
        operations: Iterable[Operation],
        *,
        timeout: float = 120.0,
        poll: float = 0.1,
        max_poll: float = 1.0,
    ) -> None:
        """Wait until every operation is terminal; raise if one failed or time runs out.

        Neon runs a branch's operations in order, so each poll (every ``poll`` seconds,
        growing to ``max_poll``) reads only the last one still pending: once it has
        ``finished``, the ones before it have too. Any other end state is looked into.
        """
        pending = list(operations)
        started = time.monotonic()
        deadline = started + timeout
        key = pending[-1].action if pending else ""
        learned = self._op_seconds.get(key)
        # With a learned duration, sleep through (nearly) all of it, then poll finely.
        interval = poll if learned is None else max(learned * 0.95, 0.02)
        after_first = poll if learned is None else max(poll / 2, 0.02)
        first_round = True
        while True:
            for op in pending:
                if op.failed:
                    raise operation_failed(op)
            pending = [op for op in pending if not op.done]
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ids = ", ".join(f"{op.action} {op.id}" for op in pending)
                raise NeonTimeoutError(
                    f"Neon operations did not finish within {timeout:.0f}s: {ids}"
                )
            self._http.wait(min(interval, remaining))
            interval = after_first * 2 if first_round else min(max_poll, interval * 2)
            first_round = False
            last = self._get_operation(project_id, pending[-1].id)
            if last.status == "finished":
                # Neon's own measure of the run time beats ours, which includes the polls.
                took = last.duration_ms / 1000 if last.duration_ms else None
                self._learn(key, took or time.monotonic() - started)
                return
            if last.done:  # failed, skipped or cancelled: find out what happened before it
                pending = [self._get_operation(project_id, op.id) for op in pending[:-1]]
                pending.append(last)
            else:
                pending[-1] = last

    def _learn(self, action: str, seconds: float) -> None:
        before = self._op_seconds.get(action)
        self._op_seconds[action] = seconds if before is None else (before + seconds) / 2

    def for_endpoint(
        self,
        project_id: str,
        branch_id: str,
        *,
        timeout: float = 120.0,
        poll: float = 0.1,
        max_poll: float = 1.0,
    ) -> Endpoint:
        """Wait until the branch's read-write endpoint is ``active`` (or ``idle``)."""
        deadline = time.monotonic() + timeout
        interval = poll
        while True:
            ready = [e for e in self._list_endpoints(project_id, branch_id) if e.ready]
            if ready:
                return ready[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NeonTimeoutError(
                    f"the endpoint of branch {branch_id} did not become active within "
                    f"{timeout:.0f}s"
                )
            self._http.wait(min(interval, remaining))
            interval = min(max_poll, interval * 2)

    def settle(
        self, project_id: str, created: CreatedBranch, *, timeout: float = 120.0
    ) -> Endpoint:
        """Wait for a new branch's operations, then return its active endpoint.

        When a ``start_compute`` operation finished, the endpoint is known to be active
        and no further call is made.
        """
        self.for_operations(project_id, created.operations, timeout=timeout)
        started = any(op.action == "start_compute" for op in created.operations)
        active = [e for e in created.endpoints if e.ready]
        if created.endpoints and (started or active):
            return created.endpoints[0]
        return self.for_endpoint(project_id, created.branch.id, timeout=timeout)


def operation_failed(op: Operation) -> NeonError:
    """The error for an operation that ended ``failed`` or ``error``."""
    detail = f": {op.error}" if op.error else ""
    where = f" on branch {op.branch_id}" if op.branch_id else ""
    return NeonOperationError(
        f"Neon operation {op.action} {op.id}{where} ended {op.status}{detail}",
        operation_id=op.id,
        branch_id=op.branch_id or "",
        action=op.action,
    )
