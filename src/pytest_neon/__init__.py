"""pytest-neon: a pristine PostgreSQL for every test, on Neon branches or offline.

PYTEST_DONT_REWRITE: the package loads as a library (see ``_load_without_rewriting``).
"""

import sys


def _load_without_rewriting() -> None:
    """Take this package off pytest's list of modules whose asserts it rewrites.

    pytest rewrites every module of a plugin's distribution, and reads them back from its
    cache with ``marshal.load`` on a file, several times slower than Python's own loader
    (about 0.6 ms a module, 40 ms a run for this package's). The plugin's asserts are not
    a test's: its modules load as any library's. Modules a user names in ``-p`` or
    ``pytest_plugins`` are still rewritten, as pytest marks them by name; those say
    PYTEST_DONT_REWRITE so that pytest does not warn when they were loaded first.
    """
    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)
        if isinstance(marked, set) and __name__ in marked:
            marked.discard(__name__)
            cache = getattr(finder, "_marked_for_rewrite_cache", None)
            if isinstance(cache, dict):
                cache.clear()


_load_without_rewriting()


from pytest_neon.errors import (  # noqa: E402
    NeonAPIError,
    NeonAuthError,
    NeonConfigError,
    NeonError,
    NeonOperationError,
    NeonTimeoutError,
)
from pytest_neon.neon_branch import NeonBranch  # noqa: E402

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
