"""Operations: made with the changes they stand for (all finishing after the operation
delay), listed and read back; and the busy time of the branch they run on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pytest_neon.local.emulator import ids, views
from pytest_neon.local.emulator.api_errors import ApiError, bad_request
from pytest_neon.local.emulator.plane.context import PlaneContext
from pytest_neon.local.emulator.plane.params import decode_cursor, encode_cursor, page_limit
from pytest_neon.local.emulator.records import JSON, BranchRecord, EndpointRecord, OperationRecord
from pytest_neon.local.emulator.sql import metadata
from pytest_neon.local.emulator.timestamps import utcnow

log = logging.getLogger("pytest_neon.emulator")

FAILED_OPERATION = "operation failed (fault injected by the emulator): nothing was done"

#: steps of an operation batch: ``(action, on_endpoint)``
Steps = list[tuple[str, bool]]


class Operations:
    """The project's operations."""

    def __init__(self, ctx: PlaneContext) -> None:
        self._ctx = ctx

    def start(
        self,
        branch: BranchRecord,
        steps: Steps,
        now: datetime,
        endpoint_record: EndpointRecord | None = None,
    ) -> list[OperationRecord]:
        """New operations for ``branch``: ``(action, on_endpoint)``; all finish together.
        Those on an endpoint are on ``endpoint_record``, default the branch's read-write one.

        The caller holds the lock and persists them with its change.
        """
        finish = now + timedelta(seconds=self._ctx.faults.settings.operation_delay)
        main = endpoint_record or branch.read_write
        main = main or (branch.endpoints[0] if branch.endpoints else None)
        endpoint = main.id if main is not None else None
        ops: list[OperationRecord] = []
        for action, on_endpoint in steps:
            if on_endpoint and endpoint is None:
                continue
            ops.append(
                OperationRecord(
                    id=ids.operation_id(),
                    branch_id=branch.id,
                    endpoint_id=endpoint if on_endpoint else None,
                    action=action,
                    seq=len(ops),
                    created_at=now,
                    finish_at=finish,
                )
            )
        for op in ops:
            self._ctx.project.operations[op.id] = op
        return ops

    def start_failing(
        self, branch: BranchRecord, steps: Steps, now: datetime
    ) -> list[OperationRecord]:
        """Operations for ``steps``, the last one ending ``failed``; nothing else changes."""
        ops = self.start(branch, steps, now)
        ops[-1].error = FAILED_OPERATION
        project_id = self._ctx.project_id
        self._ctx.metadata.persist(lambda conn: metadata.insert_operations(conn, project_id, ops))
        log.info(
            "operation %s %s on %s will fail (injected)", ops[-1].action, ops[-1].id, branch.id
        )
        return ops

    def mark_busy(self, branch: BranchRecord, state: str, now: datetime) -> None:
        """``branch`` is in ``state`` from ``now`` until its operations finish."""
        branch.busy_state = state
        branch.busy_since = now
        branch.busy_until = now + timedelta(seconds=self._ctx.faults.settings.operation_delay)

    def views_of(self, ops: list[OperationRecord], now: datetime) -> list[JSON]:
        """``Operation`` objects of ``ops`` at ``now``."""
        return [views.operation_view(self._ctx.project_id, op, now) for op in ops]

    def get_operation(self, operation_id: str) -> JSON:
        """``OperationResponse``."""
        with self._ctx.lock:
            op = self._ctx.project.operations.get(operation_id)
            if op is None:
                raise ApiError(404, "operation not found")
            return {"operation": views.operation_view(self._ctx.project_id, op, utcnow())}

    def list_operations(self, query: Mapping[str, str]) -> JSON:
        """``OperationsResponse`` + ``PaginationResponse``, newest first."""
        limit = page_limit(query.get("limit"), 1000)
        after: tuple[str, int, str] | None = None
        if query.get("cursor"):
            cursor = decode_cursor(query["cursor"])
            try:
                after = (str(cursor["at"]), int(cursor["seq"]), str(cursor["id"]))
            except (KeyError, TypeError, ValueError, OverflowError):  # Overflow: seq Infinity
                raise bad_request("invalid cursor") from None
        now = utcnow()

        def key(op: OperationRecord) -> tuple[str, int, str]:
            return (op.created_at.astimezone(UTC).isoformat(), op.seq, op.id)

        with self._ctx.lock:
            ops = sorted(self._ctx.project.operations.values(), key=key, reverse=True)
            if after is not None:
                mark = after
                ops = [op for op in ops if key(op) < mark]
            page = ops if limit is None else ops[:limit]
            body: JSON = {"operations": self.views_of(page, now)}
            if page:
                at, seq, op_id = key(page[-1])
                body["pagination"] = {"cursor": encode_cursor({"at": at, "seq": seq, "id": op_id})}
            return body
