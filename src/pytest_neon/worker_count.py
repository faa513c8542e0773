"""How many branches each worker takes turns on (``--neon-worker-branches``).

``auto`` (the default): on Neon, two when the project's branch limit leaves room for two per
worker besides the migration branch and what is on the project already (other runs'
branches included), else one; locally one, since a local reset swaps in a copy made
ahead and the next test waits for nothing a second branch would spare it. Never imports
pytest.
"""

from __future__ import annotations

from pytest_neon.config import Settings

#: what ``auto`` takes on Neon when there is room
AUTO_ON_NEON = 2


class WorkerBranches:
    """The count, and why, for the report header."""

    __slots__ = ("count", "reason")

    def __init__(self, count: int, reason: str) -> None:
        self.count = count
        self.reason = reason

    def header(self) -> str:
        """``neon: 2 branches per worker (auto: …)``."""
        plural = "es" if self.count > 1 else ""
        return f"neon: {self.count} branch{plural} per worker ({self.reason})"


def chosen(settings: Settings) -> WorkerBranches | None:
    """The count the settings give, or ``None`` when it is ``auto``."""
    if settings.worker_branches is None:
        return None
    return WorkerBranches(settings.worker_branches, settings.describe("worker_branches"))


def local(settings: Settings) -> WorkerBranches:
    """The count on the local backend."""
    return chosen(settings) or WorkerBranches(
        1, "auto: a local reset swaps in a copy made ahead; --neon-worker-branches for more"
    )


def on_neon(settings: Settings, *, workers: int, limit: int | None, in_use: int) -> WorkerBranches:
    """The count on Neon: ``workers`` processes run tests; ``limit``: the project's branch
    limit (``None``: unknown); ``in_use``: branches on the project now (this run's first
    worker branches not yet among them)."""
    given = chosen(settings)
    if given is not None:
        return given
    needed = workers * AUTO_ON_NEON + 1  # and the migration branch
    if limit is None:
        return WorkerBranches(
            AUTO_ON_NEON,
            "auto: the project's branch limit is unknown; an extra branch is made only "
            "while there is room",
        )
    if in_use + needed <= limit:
        return WorkerBranches(
            AUTO_ON_NEON,
            f"auto: the run needs up to {needed} of the project's {limit} branches, "
            f"{in_use} in use",
        )
    return WorkerBranches(
        1,
        f"auto: {AUTO_ON_NEON} per worker would need {needed} branches, and {in_use} of the "
        f"project's {limit} are in use; --neon-worker-branches to choose",
    )
