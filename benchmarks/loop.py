"""The everyday local loop: what a whole pytest run costs with pytest-neon installed.

Each row times whole pytest processes, side by side with a baseline in the same
invocation (the two commands take turns, medians are compared), on the kept local
server (``--neon-local-reuse``) in a directory of its own:

- a run with no database test, against ``-p no:neon``;
- a run of one readwrite test on a warm machine, against a plain pytest run;
- the Django example's ``tests/test_models.py`` run again (migrations unchanged), against
  pytest-django with ``--reuse-db`` on the same server: back to back, and again with a
  second between runs (what the server does between runs is then done); and its model
  tests 40 times over (200 tests rolled back by pytest-django), what each test costs;
- a burst: 20 writing tests back to back (no work of their own), then 20 reading tests, on
  10 tables of 2,000 rows, per test as pytest reports setup + teardown, against no
  isolation and pytest-postgresql, on the kept server, a throwaway cluster and a server
  given by URL.

Where valgrind is installed, the Django row's two commands also run under it, which
counts the instructions they execute: a figure that, unlike time, holds still between
runs on a VM (``--instructions 0`` skips it).

``python benchmarks/loop.py`` (``make bench`` runs it after ``run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
from run import CONNECT, PG_CONFTEST, PLAIN_CONFTEST, schema  # the same baselines as run.py's

from pytest_neon.local.launcher import start_postgres
from pytest_neon.local.shared_server import (
    running_port,
    socket_url,
    stamped_cluster,
    stop_shared_server,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_projects" / "django_app"

NO_DB = "def test_add():\n    assert 1 + 1 == 2\n"
ONE_TEST = """
import psycopg

def test_rw(neon_branch_readwrite):
    with psycopg.connect(neon_branch_readwrite.connection_string) as conn:
        conn.execute("SELECT 1")
"""

BURST_SCHEMA = schema(2000)

BURST_TESTS = (
    CONNECT
    + """
@pytest.mark.parametrize("n", range(40))
def test_case({fixture}, n):
    conn = connect({fixture})
    try:
        conn.execute("SELECT count(*) FROM t0").fetchone()
        if n < 20:  # a burst of writing tests, then reading ones
            conn.execute("INSERT INTO t0 (label, n) VALUES ('written', %s)", (n,))
            conn.commit()
    finally:
        conn.close()
"""
)

RECORDER = """
import json, os, psycopg, pytest

_PHASES = {}

def pytest_runtest_logreport(report):
    _PHASES.setdefault(report.nodeid, {})[report.when] = report.duration

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(_PHASES, f)
"""

NEON_CONFTEST = """
@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    with psycopg.connect(neon_migration_branch.connection_string) as conn:
        conn.execute(open({schema!r}).read())
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEON_", "PYTEST_NEON"))}
    for name in ("DATABASE_URL", "CI", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)  # a developer's shell: bytecode is cached, no CI variable
    return {**env, **extra}


def _pytest(*args: str) -> list[str]:
    # pytest-postgresql (installed here as a yardstick) loads psycopg with its plugin,
    # which a developer's project would not: off for the whole-run rows
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def _whole(*args: str) -> list[str]:
    return _pytest("-p", "no:postgresql", *args)


def _wall(command: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-2000:])
        raise SystemExit(f"benchmark command failed: {' '.join(command)}")
    return wall


def side_by_side(
    a: tuple[Sequence[str], Path, dict[str, str]],
    b: tuple[Sequence[str], Path, dict[str, str]],
    runs: int,
    apart: float = 0.0,
) -> tuple[float, float, float]:
    """Medians of ``runs`` runs of ``a`` and ``b``, taking turns (one warm-up each; which
    goes first alternates), and the median of the turns' differences ``a - b`` (a VM whose
    speed drifts moves both runs of a turn alike); ``apart``: seconds between runs."""

    def wall(command: tuple[Sequence[str], Path, dict[str, str]]) -> float:
        time.sleep(apart)
        return _wall(*command)

    wall(a)
    wall(b)
    walls_a, walls_b = [], []
    for turn in range(runs):
        if turn % 2:
            walls_b.append(wall(b))
            walls_a.append(wall(a))
        else:
            walls_a.append(wall(a))
            walls_b.append(wall(b))
    paired = statistics.median(x - y for x, y in zip(walls_a, walls_b, strict=True))
    return statistics.median(walls_a), statistics.median(walls_b), paired


RUNS_APART = 1.0  # seconds between runs in the Django row's second measure
INSTRUCTIONS: dict[str, float] = {}  # what -> median instructions of a run (valgrind)


def _instructions(command: Sequence[str], cwd: Path, env: dict[str, str]) -> int:
    """User-space instructions that one run of ``command`` executes, counted by valgrind
    (``callgrind``): unlike time, the same from one run to the next within a few tenths
    of a percent."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-2000:])
        raise SystemExit(f"benchmark command failed under valgrind: {' '.join(command)}")
    counted = [line for line in proc.stderr.splitlines() if "I   refs:" in line]
    return int(counted[-1].rsplit(":", 1)[1].replace(",", "").strip())


MANY_COPIES = 40  # copies of the Django example's model tests in the per-test row


def _many(tests: Path, copies: int) -> str:
    """The test module ``tests`` with its test functions ``copies`` times over (renamed)."""
    head, marker, body = tests.read_text().partition("pytestmark = pytest.mark.django_db\n")
    if not marker:
        raise SystemExit(f"{tests}: no module-wide django_db mark to copy the tests under")
    renamed = (
        re.sub(r"^def (test_\w+)\(", rf"def \1_{n}(", body, flags=re.MULTILINE)
        for n in range(copies)
    )
    return head + marker + "".join(renamed)


def _superuser_login(url: str, role: str, password: str) -> None:
    """A role with a password on the kept server, for pytest-django's side."""
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )


def whole_runs(
    work: Path, runs: int, instructions: int = 0
) -> list[tuple[str, float, float, float, str]]:
    """The first three rows: (what, pytest-neon s, baseline s, paired difference s,
    baseline name); with ``instructions``, also that many runs of the Django row's two
    commands under valgrind (:data:`INSTRUCTIONS`)."""
    kept = work / "kept"
    env = _env(NEON_LOCAL_REUSE="true", NEON_LOCAL_DIR=str(kept))
    plain_env = _env()
    small = work / "small"
    small.mkdir()
    (small / "test_utils.py").write_text(NO_DB)
    (small / "test_db.py").write_text(ONE_TEST)
    _wall(_whole("test_db.py"), small, env)  # starts the kept server
    rows = []
    no_db, no_plugin, paired = side_by_side(
        (_whole("test_utils.py"), small, env),
        (_whole("-p", "no:neon", "test_utils.py"), small, plain_env),
        runs,
    )
    rows.append(("no database test", no_db, no_plugin, paired, "`-p no:neon`"))
    one, plain, paired = side_by_side(
        (_whole("test_db.py"), small, env),
        (_whole("-p", "no:neon", "test_utils.py"), small, plain_env),
        runs,
    )
    rows.append(("one readwrite test, warm", one, plain, paired, "a plain pytest run"))

    ours, theirs = work / "django", work / "django-plain"
    shutil.copytree(EXAMPLE, ours)
    shutil.copytree(EXAMPLE, theirs)
    (theirs / "conftest.py").unlink()  # plain pytest-django
    cluster = stamped_cluster(kept)
    assert cluster is not None
    port = running_port(cluster)
    assert port is not None
    password = secrets.token_urlsafe(16)
    _superuser_login(socket_url(kept, port), "bench_django", password)
    url = f"postgresql://bench_django:{quote(password)}@127.0.0.1:{port}/library"
    django_env = _env(DATABASE_URL=url)
    _wall(_whole("-p", "no:neon", "--reuse-db", "tests/test_models.py"), theirs, django_env)
    _wall(_whole("tests/test_models.py"), ours, env)  # the migration cache is filled
    check = subprocess.run(
        _whole("tests/test_models.py"), cwd=ours, env=env, capture_output=True, text=True
    )
    if "migrations: cached" not in check.stdout:
        raise SystemExit("the Django example's second run migrated again:\n" + check.stdout)
    django, reuse, paired = side_by_side(
        (_whole("tests/test_models.py"), ours, env),
        (_whole("-p", "no:neon", "--reuse-db", "tests/test_models.py"), theirs, django_env),
        runs,
    )
    rows.append(
        ("Django example, one file, second run", django, reuse, paired, "pytest-django --reuse-db")
    )
    # After each run the server's watchdog makes the parked project ready for the next
    # (a fresh copy of the migrated state if a test wrote): back to back, that overlaps
    # the next run on this 2-vCPU VM; a developer's next run starts seconds later.
    django, reuse, paired = side_by_side(
        (_whole("tests/test_models.py"), ours, env),
        (_whole("-p", "no:neon", "--reuse-db", "tests/test_models.py"), theirs, django_env),
        runs,
        apart=RUNS_APART,
    )
    rows.append(
        (
            f"Django example, second run, runs {RUNS_APART:.0f} s apart",
            django,
            reuse,
            paired,
            "pytest-django --reuse-db",
        )
    )
    # Per test: the example's model tests 40 times over (200 tests rolled back).
    many = _many(EXAMPLE / "tests" / "test_models.py", MANY_COPIES)
    for project in (ours, theirs):
        (project / "tests" / "test_many.py").write_text(many)
    count = many.count("\ndef test_")
    django, reuse, paired = side_by_side(
        (_whole("tests/test_many.py"), ours, env),
        (_whole("-p", "no:neon", "--reuse-db", "tests/test_many.py"), theirs, django_env),
        max(5, runs // 2),
    )
    rows.append(
        (
            f"Django example, {count} rollback tests, second run",
            django,
            reuse,
            paired,
            "pytest-django --reuse-db",
        )
    )
    if instructions and shutil.which("valgrind"):
        theirs_command = _whole("-p", "no:neon", "--reuse-db", "tests/test_models.py")
        counts: dict[str, list[int]] = {"pytest-neon": [], "pytest-django --reuse-db": []}
        for _turn in range(instructions):
            counts["pytest-neon"].append(_instructions(_whole("tests/test_models.py"), ours, env))
            counts["pytest-django --reuse-db"].append(
                _instructions(theirs_command, theirs, django_env)
            )
        INSTRUCTIONS.update({k: statistics.median(v) for k, v in counts.items()})
    return rows


def _burst(
    work: Path, name: str, conftest: str, fixture: str, args: list[str], env: dict[str, str]
) -> tuple[float, float]:
    """Median setup + teardown (ms) of the reading tests after the burst, and of the
    writing tests but the first."""
    folder = work / name
    folder.mkdir()
    (folder / "conftest.py").write_text(RECORDER + conftest)
    (folder / "test_burst.py").write_text(BURST_TESTS.format(fixture=fixture))
    out = folder / "phases.json"
    _wall(_pytest(*args), folder, {**env, "BENCH_OUT": str(out)})
    phases = json.loads(out.read_text())

    def cost(n: int) -> float:
        p = next(v for k, v in phases.items() if k.endswith(f"[{n}]"))
        return float(p.get("setup", 0.0) + p.get("teardown", 0.0)) * 1000

    writing = [cost(n) for n in range(1, 20)]
    reading = [cost(n) for n in range(21, 40)]
    return statistics.median(reading), statistics.median(writing)


def bursts(work: Path) -> list[tuple[str, float, float]]:
    """The burst on each server: (what, reading ms, writing ms)."""
    schema = work / "burst.sql"
    schema.write_text(BURST_SCHEMA)
    ours = NEON_CONFTEST.format(schema=str(schema))
    kept_env = _env(NEON_LOCAL_REUSE="true", NEON_LOCAL_DIR=str(work / "kept"))
    rows = []
    rows.append(
        (
            "pytest-neon, kept server",
            *_burst(work, "burst-kept", ours, "neon_branch_readwrite", [], kept_env),
        )
    )
    throwaway = _env(NEON_LOCAL_REUSE="false")
    rows.append(
        (
            "pytest-neon, throwaway cluster",
            *_burst(work, "burst-throwaway", ours, "neon_branch_readwrite", [], throwaway),
        )
    )
    with start_postgres() as given:  # a server given by URL, pg_walinspect not installed
        rows += _given_rows(work, "given", given.url, schema, ours, throwaway)
    # A developer's own server or a CI service container: data on disk, fsync on.
    with start_postgres(base_dir=work) as given:
        with psycopg.connect(given.url, autocommit=True) as conn:
            for name in ("fsync", "full_page_writes", "synchronous_commit"):
                conn.execute(f"ALTER SYSTEM SET {name} = on")
            conn.execute("SELECT pg_reload_conf()")
        rows += _given_rows(work, "disk", given.url, schema, ours, throwaway)
    return rows


CLONES: dict[str, dict[str, float]] = {}  # server -> strategy -> ms per clone of the schema


def _clone_ms(url: str, strategy: str, runs: int = 5) -> float:
    """Median ms of ``CREATE DATABASE ... TEMPLATE bench_plain STRATEGY <strategy>``."""
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(runs):
            name = f"bench_clone_{n}"
            started = time.perf_counter()
            conn.execute(f"CREATE DATABASE {name} TEMPLATE bench_plain STRATEGY {strategy}")
            times.append((time.perf_counter() - started) * 1000)
            conn.execute(f"DROP DATABASE {name}")
    return statistics.median(times)


def _given_rows(
    work: Path, label: str, url: str, schema: Path, ours: str, env: dict[str, str]
) -> list[tuple[str, float, float]]:
    """The burst on a server given by URL: pytest-neon, pytest-postgresql, no isolation."""
    where = "server given by URL" if label == "given" else "given server on disk, fsync on"
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_plain")
    plain_url = url.rsplit("/", 1)[0] + "/bench_plain"
    with psycopg.connect(plain_url, autocommit=True) as conn:
        conn.execute(BURST_SCHEMA)
    args = [f"--neon-local-postgres-url={url}"]
    pg = PG_CONFTEST.format(
        schema=str(schema),
        host=parts.hostname,
        port=parts.port,
        user=parts.username,
        password=unquote(parts.password or ""),
    )
    plain = PLAIN_CONFTEST.format(url=plain_url)
    no_neon = ["-p", "no:neon"]
    CLONES[where] = {strategy: _clone_ms(url, strategy) for strategy in ("FILE_COPY", "WAL_LOG")}
    return [
        (
            f"pytest-neon, {where}",
            *_burst(work, f"burst-{label}", ours, "neon_branch_readwrite", args, env),
        ),
        (
            f"pytest-postgresql, same {where}",
            *_burst(work, f"burst-{label}-pg", pg, "postgresql", no_neon, env),
        ),
        (
            f"no isolation, same {where}",
            *_burst(work, f"burst-{label}-plain", plain, "plain", no_neon, env),
        ),
    ]


def main() -> None:
    """Print the local-loop tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command")
    parser.add_argument(
        "--instructions",
        type=int,
        default=3,
        help="runs of the Django row's commands under valgrind, if installed (0: none)",
    )
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pn-loop-"))  # short: the kept server's socket
    try:
        rows = whole_runs(work, opts.runs, opts.instructions)
        print("\n### The local loop: whole runs (median wall seconds, kept local server)\n")
        print("| run | pytest-neon s | baseline s | over the baseline | paired | baseline |")
        print("|---|---|---|---|---|---|")
        for what, ours, base, paired, name in rows:
            print(
                f"| {what} | {ours:.2f} | {base:.2f} | {ours - base:+.2f} s "
                f"| {paired * 1000:+.0f} ms | {name} |"
            )
        if INSTRUCTIONS:
            ours_n, theirs_n = INSTRUCTIONS["pytest-neon"], INSTRUCTIONS["pytest-django --reuse-db"]
            print(
                "\nThe Django row in instructions (valgrind, user space, median of "
                f"{opts.instructions}): pytest-neon {ours_n / 1e9:.3f} G, pytest-django "
                f"--reuse-db {theirs_n / 1e9:.3f} G, {(ours_n / theirs_n - 1) * 100:+.1f}%"
            )
        burst = bursts(work)
        baselines = {what: (r, w) for what, r, w in burst if what.startswith("no isolation")}
        print("\n### A burst of 20 writing tests, then 20 reading tests (median ms per test)\n")
        print("| strategy | reading test | over no isolation | writing test | over no isolation |")
        print("|---|---|---|---|---|")
        for what, reading, writing in burst:
            base_read, base_write = next(
                (v for k, v in baselines.items() if "on disk" in k)
                if "on disk" in what
                else (v for k, v in baselines.items() if "on disk" not in k)
            )
            print(
                f"| {what} | {reading:.1f} | {reading - base_read:+.1f} | {writing:.1f} "
                f"| {writing - base_write:+.1f} |"
            )
        print("\n### One clone of the burst's schema (median ms)\n")
        print("| server | FILE_COPY | WAL_LOG |")
        print("|---|---|---|")
        for where, by in CLONES.items():
            print(f"| {where} | {by['FILE_COPY']:.1f} | {by['WAL_LOG']:.1f} |")
    finally:
        stop_shared_server(work / "kept")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
