"""Per-test isolation cost: pytest-neon vs a naive reset-every-test plugin vs pytest-postgresql.

Runs the same synthetic suite (10 tables, a few thousand rows; half the tests write, half
only read) once per strategy, on one throwaway PostgreSQL, in one invocation, and prints
tables with ratios against pytest-neon. ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

from pytest_neon.local.emulator import Emulator
from pytest_neon.local.launcher import start_postgres

API_KEY = "bench-key-0123456789"


def schema(rows: int) -> str:
    """Ten tables of ``rows`` rows each."""
    return "\n".join(
        f"CREATE TABLE t{i} (id serial PRIMARY KEY, label text NOT NULL, n int NOT NULL);"
        f"INSERT INTO t{i} (label, n) SELECT 'row ' || g, g FROM generate_series(1, {rows}) g;"
        for i in range(10)
    )


SCHEMA = schema(400)


def writes(n: int, count: int, burst: bool) -> bool:
    """Whether test ``n`` writes: the first half of a burst suite; else two writing tests,
    then two that only read (the mixed suite). The suite has the same rule."""
    return n < count // 2 if burst else n % 4 in (0, 1)


#: the tests' helper: a connection from a branch of ours or pytest-postgresql's fixture
CONNECT = """
import psycopg
import pytest

def connect(value):
    if isinstance(value, psycopg.Connection):
        return value
    return psycopg.connect(value.connection_string)
"""

TESTS = (
    CONNECT
    + """
import time

WORK = float({work!r})
ISOLATED = {isolated!r}
BURST = {burst!r}

@pytest.mark.parametrize("n", range({count}))
def test_case({fixture}, n):
    conn = connect({fixture})
    try:
        rows = conn.execute("SELECT count(*) FROM t0").fetchone()
        assert rows == (400,) or not ISOLATED
        if (n < {count} // 2) if BURST else (n % 4 in (0, 1)):
            conn.execute("INSERT INTO t0 (label, n) VALUES ('written', %s)", (n,))
            conn.execute("UPDATE t3 SET n = n + 1 WHERE id < 50")
            conn.commit()
    finally:
        conn.close()
    time.sleep(WORK)
"""
)

RECORDER = """
import json, os

_PHASES = {}

def pytest_runtest_logreport(report):
    _PHASES.setdefault(report.nodeid, {})[report.when] = report.duration

def pytest_sessionfinish(session):
    name = os.environ.get("BENCH_OUT")
    if name and not hasattr(session.config, "workerinput"):
        with open(name, "w") as f:
            json.dump(_PHASES, f)
"""

OURS_CONFTEST = """
import psycopg, pytest

@pytest.fixture(scope="session")
def neon_apply_migrations(neon_migration_branch):
    with psycopg.connect(neon_migration_branch.connection_string) as conn:
        conn.execute(open({schema!r}).read())

@pytest.fixture(scope="session")
def neon_migration_fingerprint():
    import os
    return os.environ.get("BENCH_FINGERPRINT")
"""

NAIVE_CONTEST = """
import os
import pytest
from pytest_neon.integration import current_session

@pytest.fixture
def naive(neon_branch_readonly, pytestconfig, _neon_source):
    # What a plugin without write detection or background work does: the test gets the
    # branch, and its teardown restores the branch and waits for the restore to finish.
    session = current_session(pytestconfig)
    branch = session.worker_branch
    yield branch
    client, project = session.client, branch.project_id
    result = client.restore_branch(project, branch.branch_id, source_branch_id=_neon_source)
    client.wait_for_operations(project, result.operations)
"""

PLAIN_CONFTEST = """
import pytest

class Database:
    connection_string = {url!r}

@pytest.fixture
def plain():
    # No isolation at all: what pytest itself costs per test with a database fixture.
    return Database()
"""

PG_CONFTEST = """
import psycopg
from pytest_postgresql import factories

def load(host, port, user, dbname, password, **kwargs):
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password) as c:
        c.execute(open({schema!r}).read())

pg_noproc = factories.postgresql_noproc(
    host={host!r}, port={port!r}, user={user!r}, password={password!r},
    dbname="bench_pg", load=[load],
)
postgresql = factories.postgresql("pg_noproc")
"""


@dataclass
class Result:
    """One strategy's run: per-test overheads in milliseconds."""

    name: str
    wall: float
    per_test: list[float]  # setup + teardown of every test but the first
    reset_cost: list[float]  # a writing test's teardown + the next test's setup
    idle: list[float]  # setup + teardown of a test that wrote nothing, after one that wrote nothing
    writing: list[float]  # setup + teardown of every writing test but the first
    reading: list[float]  # setup + teardown of every test that wrote nothing
    api_calls: int | None
    resets: str
    branches: str = "-"

    @staticmethod
    def stat(values: list[float], q: float) -> float:
        """The ``q`` quantile of ``values``."""
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_suite(
    name: str,
    workdir: Path,
    conftest: str,
    fixture: str,
    args: list[str],
    env: dict[str, str],
    count: int,
    work: float,
    *,
    isolated: bool = True,
    burst: bool = False,
) -> Result:
    """Write the suite into ``workdir`` and run pytest on it in a subprocess."""
    workdir.mkdir(parents=True)
    (workdir / "conftest.py").write_text(RECORDER + conftest)
    tests = TESTS.format(work=work, count=count, fixture=fixture, isolated=isolated, burst=burst)
    (workdir / "test_bench.py").write_text(tests)
    out = workdir / "phases.json"
    full_env = {**os.environ, **env, "BENCH_OUT": str(out)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit(f"{name}: the benchmark suite failed")
    phases = {
        int(re.search(r"\[(\d+)\]", nodeid).group(1)): p  # type: ignore[union-attr]
        for nodeid, p in json.loads(out.read_text()).items()
    }

    def cost(n: int) -> float:
        return float(phases[n].get("setup", 0.0) + phases[n].get("teardown", 0.0)) * 1000

    def wrote(n: int) -> bool:
        return writes(n, count, burst)

    writes_at = [n for n in phases if wrote(n)]
    per_test = [cost(n) for n in phases if n > 0]
    reset_cost = [
        (phases[n].get("teardown", 0.0) + phases[n + 1].get("setup", 0.0)) * 1000
        for n in writes_at
        if n > 0 and n + 1 in phases
    ]
    idle = [cost(n) for n in phases if n > 0 and not wrote(n) and not wrote(n - 1)]
    calls = re.search(r"API calls: (\d+)", proc.stdout)
    resets = re.search(r"resets: (\d+ done / \d+ skipped)", proc.stdout)
    branches = re.search(r"branches created: (\d+)", proc.stdout)
    cache = re.search(r"migration cache: (\w+)", proc.stdout)
    return Result(
        name,
        wall,
        per_test,
        reset_cost,
        idle,
        [cost(n) for n in writes_at if n > 0],
        [cost(n) for n in phases if n > 0 and not wrote(n)],
        int(calls.group(1)) if calls else None,
        "after every test" if fixture == "naive" else resets.group(1) if resets else "-",
        (branches.group(1) if branches else "-") + (f" (cache {cache.group(1)})" if cache else ""),
    )


def _plain_database(server_url: str) -> str:
    """A database with the suite's schema, for the no-isolation baseline; its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_plain")
        conn.execute("CREATE DATABASE bench_plain")
    parts = urlsplit(server_url)
    url = urlunsplit(parts._replace(path="/bench_plain"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return url


def neon_args(emu: Emulator) -> list[str]:
    """Point the plugin at ``emu``."""
    return [
        "--neon-backend=neon",
        f"--neon-api-host={emu.api_host}",
        f"--neon-project-id={emu.project_id}",
    ]


def table(title: str, results: list[Result]) -> str:
    """A Markdown table of ``results`` with ratios against the first (pytest-neon)."""
    lines = [
        f"### {title}",
        "",
        "| strategy | per test: median / p95 ms | writing test's reset: median / p95 ms "
        "| test that wrote nothing: median ms | wall s | resets | API calls "
        "| mean per-test overhead vs pytest-neon |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = statistics.fmean(results[0].per_test)
    for r in results:
        lines.append(
            f"| {r.name} | {r.stat(r.per_test, 0.5):.1f} / {r.stat(r.per_test, 0.95):.1f} "
            f"| {r.stat(r.reset_cost, 0.5):.1f} / {r.stat(r.reset_cost, 0.95):.1f} "
            f"| {r.stat(r.idle, 0.5):.1f} | {r.wall:.2f} | {r.resets} "
            f"| {r.api_calls if r.api_calls is not None else '-'} "
            f"| {statistics.fmean(r.per_test) / base:.1f}x |"
        )
    return "\n".join(lines)


def burst_table(results: list[Result], plain: Result) -> str:
    """The burst suite: what a writing and a reading test wait over no isolation."""
    lines = [
        "| configuration | writing test over no isolation: median / max ms "
        "| reading test: median / p95 / max ms | wall s | resets |",
        "|---|---|---|---|---|",
    ]
    w0, r0 = plain.stat(plain.writing, 0.5), plain.stat(plain.reading, 0.5)
    for r in results:
        lines.append(
            f"| {r.name} | {r.stat(r.writing, 0.5) - w0:.1f} / {max(r.writing) - w0:.1f} "
            f"| {r.stat(r.reading, 0.5) - r0:.1f} / {r.stat(r.reading, 0.95) - r0:.1f} "
            f"/ {max(r.reading) - r0:.1f} | {r.wall:.2f} | {r.resets} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run every strategy and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests", type=int, default=40, help="tests per local run")
    parser.add_argument("--work", type=float, default=0.0, help="seconds of work per local test")
    parser.add_argument("--neon-tests", type=int, default=20, help="tests per latency-model run")
    parser.add_argument(
        "--neon-work",
        type=float,
        nargs="+",
        default=[0.0, 0.2],
        help="seconds of work per latency-model test (a table for each)",
    )
    parser.add_argument("--burst-work", type=float, default=0.3, help="work per burst test")
    parser.add_argument(
        "--only",
        choices=("local", "model", "burst"),
        action="append",
        help="run only these parts (default: all)",
    )
    opts = parser.parse_args()
    parts = set(opts.only or ("local", "model", "burst"))

    root = Path(tempfile.mkdtemp(prefix="pytest-neon-bench-"))
    schema = root / "schema.sql"
    schema.write_text(SCHEMA)
    env = {"NEON_API_KEY": API_KEY, "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("DATABASE_URL", "NEON_PROJECT_ID", "NEON_BACKEND", "NEON_WORKER_BRANCHES"):
        os.environ.pop(name, None)

    with start_postgres() as pg:
        print(
            f"# pytest-neon benchmark — {platform.platform()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {pg.source}\n"
        )
        ours_conftest = OURS_CONFTEST.format(schema=str(schema))
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        plain_url = _plain_database(pg.url)
        if "local" in parts:
            local_part(opts, root, pg.url, ours_conftest, plain_url, schema, env)
        if parts & {"model", "burst"}:
            with Emulator(pg.url, api_key=API_KEY, request_delay=0.05, operation_delay=0.5) as emu:
                if "model" in parts:
                    model_part(opts, root, emu, ours_conftest, env)
                if "burst" in parts:
                    burst_part(opts, root, emu, ours_conftest, plain_url, env)
                emu.stop(drop=True)


def local_part(
    opts: argparse.Namespace,
    root: Path,
    server_url: str,
    ours_conftest: str,
    plain_url: str,
    schema: Path,
    env: dict[str, str],
) -> None:
    """Local PostgreSQL: pytest-neon, the naive plugin, no isolation, pytest-postgresql."""
    parts = urlsplit(server_url)
    local_args = ["--neon-backend=local", f"--neon-local-postgres-url={server_url}"]
    local = [
        run_suite(
            "pytest-neon",
            root / "ours",
            ours_conftest,
            "neon_branch_readwrite",
            local_args,
            env,
            opts.tests,
            opts.work,
        ),
        run_suite(
            "naive: restore after every test",
            root / "naive",
            ours_conftest + NAIVE_CONTEST,
            "naive",
            local_args,
            env,
            opts.tests,
            opts.work,
        ),
        run_suite(
            "baseline: no isolation (a plain fixture)",
            root / "plain",
            PLAIN_CONFTEST.format(url=plain_url),
            "plain",
            ["-p", "no:neon"],
            env,
            opts.tests,
            opts.work,
            isolated=False,
        ),
        run_suite(
            "pytest-postgresql: clone per test",
            root / "pgpg",
            PG_CONFTEST.format(
                schema=str(schema),
                host=parts.hostname,
                port=parts.port,
                user=parts.username,
                password=unquote(parts.password or ""),
            ),
            "postgresql",
            ["-p", "no:neon"],
            env,
            opts.tests,
            opts.work,
        ),
    ]
    print(table(f"Local PostgreSQL, {opts.tests} tests, half write, {opts.work}s work", local))
    ours, plain = local[0], local[2]
    base = plain.stat(plain.per_test, 0.5)
    after_write = ours.stat(ours.reset_cost, 0.5) - plain.stat(plain.reset_cost, 0.5)
    after_read = ours.stat(ours.idle, 0.5) - plain.stat(plain.idle, 0.5)
    print(
        f"\nOver the baseline (pytest's own {base:.1f} ms per test), pytest-neon adds"
        f" {after_write:.1f} ms (median) after a writing test and {after_read:.1f} ms to a"
        " test that wrote nothing."
    )


def model_part(
    opts: argparse.Namespace, root: Path, emu: Emulator, ours_conftest: str, env: dict[str, str]
) -> None:
    """The Neon latency model: the mixed suite with the default settings, one, two and
    three branches per worker, and the naive plugin; then the migration cache."""
    for work in opts.neon_work:
        tag = f"{work:g}s"
        configs: list[tuple[str, list[str]]] = [("pytest-neon, default settings", [])] + [
            (f"pytest-neon, {n} branch{'es' if n > 1 else ''} per worker",
             [f"--neon-worker-branches={n}"])
            for n in (1, 2, 3)
        ]  # fmt: skip
        model = [
            run_suite(
                name,
                root / f"ours-neon-{tag}-{i}",
                ours_conftest,
                "neon_branch_readwrite",
                [*neon_args(emu), *extra],
                env,
                opts.neon_tests,
                work,
            )
            for i, (name, extra) in enumerate(configs)
        ]
        naive = run_suite(
            "naive: restore after every test",
            root / f"naive-neon-{tag}",
            ours_conftest + NAIVE_CONTEST,
            "naive",
            neon_args(emu),
            env,
            opts.neon_tests,
            work,
        )
        print()
        print(
            table(
                f"Neon latency model (request 50 ms, operation 500 ms), "
                f"{opts.neon_tests} tests, half write, {work:g}s work",
                [*model, naive],
            )
        )
        baseline = sum(naive.per_test)
        print("\nTotal visible overhead (setup + teardown of every test but the first):")
        for r in [*model, naive]:
            total = sum(r.per_test)
            print(f"- {r.name}: {total / 1000:.2f}s ({total / baseline:.0%} of naive)")

    cache_env = {**env, "BENCH_FINGERPRINT": "bench-v1"}
    setups = [
        run_suite(
            f"{label} cache",
            root / f"cache-{label}",
            ours_conftest,
            "neon_branch_readwrite",
            neon_args(emu),
            cache_env,
            2,
            0.0,
        )
        for label in ("cold", "warm")
    ]
    print("\n### Session setup with the migration cache (latency model)\n")
    print("| run | wall s | branches created | API calls |")
    print("|---|---|---|---|")
    for r in setups:
        print(f"| {r.name} | {r.wall:.2f} | {r.branches} | {r.api_calls} |")


def burst_part(
    opts: argparse.Namespace,
    root: Path,
    emu: Emulator,
    ours_conftest: str,
    plain_url: str,
    env: dict[str, str],
) -> None:
    """Twenty writing tests in a row, then twenty reading ones, in the latency model."""
    count, work = 40, opts.burst_work
    runs = [
        run_suite(
            name,
            root / f"burst-{i}",
            ours_conftest,
            "neon_branch_readwrite",
            [*neon_args(emu), *extra],
            env,
            count,
            work,
            burst=True,
        )
        for i, (name, extra) in enumerate(
            [
                ("pytest-neon, default settings", []),
                ("pytest-neon, 1 branch per worker", ["--neon-worker-branches=1"]),
            ]
        )
    ]
    plain = run_suite(
        "baseline: no isolation",
        root / "burst-plain",
        PLAIN_CONFTEST.format(url=plain_url),
        "plain",
        ["-p", "no:neon"],
        env,
        count,
        work,
        isolated=False,
        burst=True,
    )
    print(
        f"\n### Neon latency model: {count // 2} writing tests in a row, then "
        f"{count // 2} reading tests, {work:g}s work each\n"
    )
    print(burst_table(runs, plain))


if __name__ == "__main__":
    main()
