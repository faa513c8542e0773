"""pytest-neon: a pristine PostgreSQL for every test, on Neon branches or offline."""

from pytest_neon.errors import (
    NeonAPIError,
    NeonAuthError,
    NeonConfigError,
    NeonError,
    NeonOperationError,
    NeonTimeoutError,
)
from pytest_neon.neon_branch import NeonBranch

__version__ = "4.0.0"

__all__ = [
    "NeonAPIError",
    "NeonAuthError",
    "NeonBranch",
    "NeonConfigError",
    "NeonError",
    "NeonOperationError",
    "NeonTimeoutError",
    "__version__",
]
