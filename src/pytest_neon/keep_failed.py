"""Keeping a failing test's data (``--neon-keep-failed``): its worker branch's state at the
failure, copied before the branch is reset, and how to reach it.

On Neon (or the emulator in its place) the copy is a branch of its own,
``pytest-neon-failed-<test>-<run id>``, with the ``--neon-keep-failed-expiry``: made from
the parent and restored from the worker branch, since Neon gives a branch with an expiry
no children. On the local backend it is a database on the server
(:mod:`pytest_neon.local.kept_failures`). At most ``--neon-keep-failed`` are kept per run,
counted in the run's shared directory across xdist workers. Never imports pytest.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_neon.clock import utcnow
from pytest_neon.config import DEFAULT_API_HOST
from pytest_neon.errors import NeonError
from pytest_neon.file_lock import exclusive
from pytest_neon.naming import failed_annotations, failed_database_name, failed_test_name
from pytest_neon.neon_branch import NeonBranch
from pytest_neon.redact import redact
from pytest_neon.xdist import coordination_dir

if TYPE_CHECKING:
    from pytest_neon.branch_ops import BranchOps

log = logging.getLogger("pytest_neon.branches")

_COUNT_FILE = "kept_failed"


@dataclass(frozen=True)
class LocalPlace:
    """Where the local backend keeps a failing test's database.

    ``kind``: ``kept`` (the kept server: it outlives the run), ``given`` (a server given by
    URL) or ``throwaway`` (removed at the run's end); ``url``: a superuser DSN of it;
    ``password_from``: where the password of ``url`` comes from, for the report.
    """

    kind: str
    url: str = field(repr=False)
    password_from: str = ""


@dataclass(frozen=True)
class Kept:
    """What was kept of one failing test (or why nothing was)."""

    test: str
    name: str = ""  # the branch's or database's name; empty when nothing was kept
    branch_id: str = ""
    lines: tuple[str, ...] = ()  # the report section: how to reach it, or why not kept
    # a local copy still to make, after the test's teardown (see FailureKeeper.finish)
    make: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def kept(self) -> bool:
        """Whether the test's data was kept."""
        return bool(self.name)

    @property
    def summary_line(self) -> str:
        """One line of the end-of-run summary."""
        what = f"{self.name} ({self.branch_id})" if self.branch_id else self.name
        return f"{self.test}: {what}"


class Quota:
    """At most ``cap`` kept per run: a count in the run's shared directory, so that the
    run's xdist workers share it."""

    def __init__(self, run_id: str, cap: int) -> None:
        self.cap = cap
        self._path: Path = coordination_dir(run_id) / _COUNT_FILE

    def take(self) -> bool:
        """One more, if the cap leaves room."""
        with exclusive(self._path.with_suffix(".lock"), timeout=30.0):
            try:
                used = int(self._path.read_text() or 0)
            except (OSError, ValueError):
                used = 0
            if used >= self.cap:
                return False
            self._path.write_text(str(used + 1))
            return True


def _until(expiry: int) -> tuple[datetime, str]:
    """The expiry ``expiry`` s from now, and how the report says it."""
    expires_at = utcnow() + timedelta(seconds=expiry)
    span = f"{expiry / 3600:g} h" if expiry >= 3600 else f"{expiry} s"
    when = f"{expires_at:%Y-%m-%d %H:%M:%S} UTC"
    return expires_at, f"until {when} ({span}, --neon-keep-failed-expiry)"


class FailureKeeper:
    """Keeps the data of this process's failing tests, within the run's cap."""

    def __init__(
        self,
        *,
        run_id: str,
        cap: int,
        expiry: int,
        local: LocalPlace | None = None,
    ) -> None:
        """``local``: the local backend's server (``None``: on Neon, the data is a branch)."""
        self.run_id = run_id
        self.expiry = expiry
        self.local = local
        self.quota = Quota(run_id, cap)
        self.kept: list[Kept] = []
        self.capped = 0  # failing tests not kept: the cap was reached

    def keep(self, test: str, branch: NeonBranch, ops: BranchOps) -> Kept:
        """Keep ``branch``'s state as test ``test``'s (``ops``: the session's
        :class:`~pytest_neon.branch_ops.BranchOps`, on Neon)."""
        if not self.quota.take():
            self.capped += 1
            return Kept(
                test,
                lines=(
                    f"pytest-neon: this test's data was not kept: the run kept "
                    f"{self.quota.cap} failing tests' branches already (--neon-keep-failed="
                    f"{self.quota.cap})",
                ),
            )
        try:
            if self.local is None:
                kept = self._keep_branch(test, branch, ops)
            else:
                kept = self._keep_database(test, branch, self.local)
        except Exception as exc:  # a debugging aid: the test's own failure matters more
            return _not_kept(test, exc)
        if kept.make is None:
            self.kept.append(kept)
        return kept

    def finish(self, planned: Kept) -> Kept:
        """Make the local copy ``planned`` by :meth:`keep`, once the test's teardown is
        over: copying a database ends the sessions on it, which the test's fixtures may
        still use while they tear down."""
        if planned.make is None:
            return planned
        try:
            planned.make()
        except Exception as exc:
            return _not_kept(planned.test, exc)
        done = replace(planned, make=None)
        self.kept.append(done)
        return done

    def _keep_branch(self, test: str, branch: NeonBranch, ops: BranchOps) -> Kept:
        name = failed_test_name(test, self.run_id)
        expires_at, until = _until(self.expiry)
        ops.wait_ready(branch.branch_id)
        with ops.counters.phase("keep failed"):
            branch_id = ops.create_kept_copy(
                name,
                annotations=failed_annotations(self.run_id),
                source_id=branch.branch_id,
                expires_at=expires_at,
            )
        command = f"neonctl connection-string {name} --project-id {ops.project_id}"
        settings = ops.settings
        if settings.database != "neondb":
            command += f" --database-name {settings.database}"
        if settings.role != "neondb_owner":
            command += f" --role-name {settings.role}"
        if settings.api_host != DEFAULT_API_HOST:
            command += f" --api-host {settings.api_host}"
        return Kept(
            test,
            name=name,
            branch_id=branch_id,
            lines=(
                f"pytest-neon kept this test's data as it failed: branch {name} ({branch_id}) "
                f"in project {ops.project_id}, {until}",
                f"its connection string: {command}",
            ),
        )

    def _keep_database(self, test: str, branch: NeonBranch, place: LocalPlace) -> Kept:
        from psycopg.conninfo import conninfo_to_dict

        from pytest_neon.local.kept_failures import dsn_without_password, keep_database

        if not place.url:
            raise NeonError("this process does not know the local server's superuser login")
        name = failed_database_name(test, self.run_id)
        expires_at, until = _until(self.expiry)
        source = str(conninfo_to_dict(branch.connection_string)["dbname"])
        make = functools.partial(keep_database, place.url, source, name, expires_at)
        # the throwaway cluster's superuser password is the run's secret: the test's role
        # (which owns the tables) connects instead
        shown = branch.connection_string if place.kind == "throwaway" else place.url
        dsn = redact(dsn_without_password(shown, name))
        if place.kind == "kept":
            lines = (
                f"pytest-neon keeps this test's data: database {name} on the kept local "
                f"PostgreSQL (copied after the test's teardown), {until}; then its watchdog or "
                "the next run drops it",
                f'connect: psql "{dsn}" (no password: the kept server\'s Unix socket, in a '
                "directory only you can enter)",
            )
        elif place.kind == "given":
            lines = (
                f"pytest-neon keeps this test's data: database {name} (copied after the test's "
                f"teardown), {until}; then the next run on this server drops it",
                f"connect: {dsn} (the password is the one in {place.password_from})",
            )
        else:
            lines = (
                f"pytest-neon keeps this test's data: database {name} (copied after the test's "
                "teardown), for the rest of this run only: the throwaway cluster (CI, or "
                "--neon-local-reuse=false) is removed when the run ends; to keep it longer, "
                "use the kept local server "
                "(--neon-local-reuse=true) or --neon-local-postgres-url",
                f"connect while the run lasts: {dsn} (password: {place.password_from})",
            )
        return Kept(test, name=name, lines=lines, make=make)


def _not_kept(test: str, exc: Exception) -> Kept:
    """Why ``test``'s data was not kept (a debugging aid: the test's own failure matters
    more than this one)."""
    log.warning("pytest-neon: could not keep the data of %s: %s", test, exc)
    return Kept(test, lines=(redact(f"pytest-neon: this test's data was not kept: {exc}"),))
