"""Neon's API v2, as pytest-neon speaks it: a typed client, its transport and waits."""

from pytest_neon.api.client import NeonClient
from pytest_neon.api.retry import RetryPolicy
from pytest_neon.api.transport import DEFAULT_TIMEOUT, ApiStats, client_limits

__all__ = ["DEFAULT_TIMEOUT", "ApiStats", "NeonClient", "RetryPolicy", "client_limits"]
