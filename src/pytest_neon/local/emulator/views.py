"""JSON bodies in the shapes of Neon's OpenAPI schemas (Branch, Endpoint, Operation, ...)."""

from __future__ import annotations

from datetime import datetime

from pytest_neon.local.emulator.records import (
    JSON,
    BranchRecord,
    DatabaseRecord,
    EndpointRecord,
    OperationRecord,
    ProjectRecord,
    RoleRecord,
)
from pytest_neon.local.emulator.timestamps import rfc3339

REGION = "local"
CREATION_SOURCE = "pytest-neon-emulator"


def project_view(
    project: ProjectRecord, *, host: str, pg_version: int, max_branches: int, now: datetime
) -> JSON:
    """A ``Project`` object."""
    period_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (period_start.month % 12) + 1
    period_end = period_start.replace(
        year=period_start.year + (1 if next_month == 1 else 0), month=next_month
    )
    return {
        "id": project.id,
        "platform_id": REGION,
        "region_id": REGION,
        "name": project.id,
        "provisioner": "k8s-pod",
        "default_endpoint_settings": {
            "autoscaling_limit_min_cu": 0.25,
            "autoscaling_limit_max_cu": 0.25,
            "suspend_timeout_seconds": 0,
        },
        "settings": {},
        "pg_version": min(max(pg_version // 10000, 14), 18),
        "proxy_host": host,
        "branch_logical_size_limit": 0,
        "branch_logical_size_limit_bytes": 0,
        "store_passwords": True,
        "cpu_used_sec": 0,
        "active_time_seconds": 0,
        "compute_time_seconds": 0,
        "written_data_bytes": 0,
        "data_transfer_bytes": 0,
        "data_storage_bytes_hour": 0,
        "creation_source": CREATION_SOURCE,
        "history_retention_seconds": 0,
        "created_at": rfc3339(project.created_at),
        "updated_at": rfc3339(project.updated_at),
        "consumption_period_start": rfc3339(period_start),
        "consumption_period_end": rfc3339(period_end),
        "owner_id": "local",
        "owner": {
            "email": "emulator@localhost",
            "name": "pytest-neon emulator",
            "branches_limit": max_branches,
            "subscription_type": "UNKNOWN",
        },
    }


def user_view(max_branches: int) -> JSON:
    """A ``CurrentUserInfoResponse``: the emulator's one local user."""
    return {
        "active_seconds_limit": 0,
        "id": "local",
        "email": "emulator@localhost",
        "login": "emulator",
        "name": "pytest-neon emulator",
        "last_name": "",
        "image": "",
        "projects_limit": 1,
        "branches_limit": max_branches,
        "max_autoscaling_limit": 0.25,
        "compute_seconds_limit": 0,
        "auth_accounts": [
            {
                "provider": "keycloak",
                "email": "emulator@localhost",
                "name": "pytest-neon emulator",
                "login": "emulator",
                "image": "",
            }
        ],
        "plan": "free",
        "billing_account": {  # not required any more, but clients built earlier expect it
            "state": "active",
            "payment_source": {"type": "none"},
            "subscription_type": "free_v2",
            "payment_method": "none",
            "quota_reset_at_last": "2026-01-01T00:00:00Z",
            "name": "pytest-neon emulator",
            "email": "emulator@localhost",
            "address_city": "",
            "address_country": "",
            "address_line1": "",
            "address_line2": "",
            "address_postal_code": "",
            "address_state": "",
        },
    }


def branch_view(project_id: str, branch: BranchRecord, now: datetime) -> JSON:
    """A ``Branch`` object."""
    state = branch.state(now)
    body: JSON = {
        "id": branch.id,
        "project_id": project_id,
        "name": branch.name,
        "current_state": state,
        "state_changed_at": rfc3339(branch.busy_since if state != "ready" else branch.busy_until),
        "logical_size": 0,
        "creation_source": CREATION_SOURCE,
        "primary": branch.default,
        "default": branch.default,
        "protected": branch.protected,
        "cpu_used_sec": 0,
        "compute_time_seconds": 0,
        "active_time_seconds": 0,
        "written_data_bytes": 0,
        "data_transfer_bytes": 0,
        "created_at": rfc3339(branch.created_at),
        "updated_at": rfc3339(branch.updated_at),
        "init_source": "parent-data",
    }
    if state != "ready":
        body["pending_state"] = "ready"
    if branch.parent_id:
        body["parent_id"] = branch.parent_id
        body["parent_timestamp"] = rfc3339(branch.last_reset_at or branch.created_at)
    if branch.expires_at is not None:
        body["expires_at"] = rfc3339(branch.expires_at)
    if branch.ttl_seconds is not None:
        body["ttl_interval_seconds"] = branch.ttl_seconds
    if branch.last_reset_at is not None:
        body["last_reset_at"] = rfc3339(branch.last_reset_at)
    return body


def annotation_view(branch: BranchRecord) -> JSON:
    """An ``AnnotationData`` object for ``branch`` (empty value when it has none)."""
    body: JSON = {
        "object": {"type": "console/branch", "id": branch.id},
        "value": dict(branch.annotation),
    }
    if branch.annotation_created_at is not None:
        body["created_at"] = rfc3339(branch.annotation_created_at)
    if branch.annotation_updated_at is not None:
        body["updated_at"] = rfc3339(branch.annotation_updated_at)
    return body


def endpoint_view(
    project_id: str, branch: BranchRecord, ep: EndpointRecord, host: str, now: datetime
) -> JSON:
    """An ``Endpoint`` object; ``init`` while the branch's operations run, then ``active``
    (``idle`` once suspended)."""
    active = branch.state(now) == "ready"
    body: JSON = {
        "host": host,
        "id": ep.id,
        "project_id": project_id,
        "branch_id": branch.id,
        "autoscaling_limit_min_cu": 0.25,
        "autoscaling_limit_max_cu": 0.25,
        "region_id": REGION,
        "type": ep.type,
        "current_state": ("idle" if ep.suspended else "active") if active else "init",
        "settings": {"pg_settings": {}},
        "pooler_enabled": False,
        "pooler_mode": "transaction",
        "disabled": False,
        "passwordless_access": False,
        "creation_source": CREATION_SOURCE,
        "created_at": rfc3339(ep.created_at),
        "updated_at": rfc3339(ep.updated_at),
        "proxy_host": host,
        "suspend_timeout_seconds": 0,
        "provisioner": "k8s-pod",
    }
    if active and ep.suspended:
        body["suspended_at"] = rfc3339(ep.updated_at)
    elif active:
        body["started_at"] = rfc3339(max(branch.busy_until, ep.updated_at))
        body["last_active"] = rfc3339(now)
    else:
        body["pending_state"] = "active"
    return body


def operation_view(project_id: str, op: OperationRecord, now: datetime) -> JSON:
    """An ``Operation`` object with its status at ``now``."""
    status = op.status(now)
    if status in ("finished", "failed"):
        updated, duration = op.finish_at, op.finish_at - op.created_at
    else:
        updated, duration = op.created_at, now - op.created_at
    body: JSON = {
        "id": op.id,
        "project_id": project_id,
        "branch_id": op.branch_id,
        "action": op.action,
        "status": status,
        "failures_count": 1 if op.error is not None else 0,
        "created_at": rfc3339(op.created_at),
        "updated_at": rfc3339(updated),
        "total_duration_ms": max(0, int(duration.total_seconds() * 1000)),
    }
    if op.endpoint_id:
        body["endpoint_id"] = op.endpoint_id
    if op.error is not None:
        body["error"] = op.error
    return body


def role_view(branch_id: str, role: RoleRecord) -> JSON:
    """A ``Role`` object (without its password)."""
    return {
        "branch_id": branch_id,
        "name": role.name,
        "protected": False,
        "authentication_method": "password",
        "created_at": rfc3339(role.created_at),
        "updated_at": rfc3339(role.created_at),
    }


def database_view(branch_id: str, db: DatabaseRecord) -> JSON:
    """A ``Database`` object (the logical name; the real one is in connection URIs)."""
    return {
        "id": db.id,
        "branch_id": branch_id,
        "name": db.name,
        "owner_name": db.owner_name,
        "created_at": rfc3339(db.created_at),
        "updated_at": rfc3339(db.updated_at),
    }
