"""``pytest-neon-emulator``: serve the Neon API v2 emulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pytest_neon.local.emulator import ids
from pytest_neon.local.emulator.app import Emulator
from pytest_neon.local.emulator.proxy.tls import TLS_EXTRA
from pytest_neon.redact import redact, register_secret

log = logging.getLogger("pytest_neon.emulator")


def _project_id(value: str) -> str:
    if not ids.PATH_ID.match(value):
        raise argparse.ArgumentTypeError(f"must match {ids.PATH_ID.pattern}")
    return value


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return number


def _probability(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (the options are a contract: see docs/design.md)."""
    parser = argparse.ArgumentParser(
        prog="pytest-neon-emulator",
        description="Serve a Neon API v2 emulator over a real PostgreSQL: each branch is a set"
        " of databases cloned by template.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    parser.add_argument(
        "--postgres-url",
        help="superuser DSN of the PostgreSQL to use (default: start an embedded one)",
    )
    parser.add_argument(
        "--project-id", type=_project_id, help="project to serve (resumed if it exists)"
    )
    parser.add_argument(
        "--api-key", help="require 'Authorization: Bearer <key>' (default: no auth)"
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="write JSON {api_host, project_id, api_key, default_branch_id} here once serving",
    )
    _add_fault_options(parser)
    parser.add_argument("--max-branches", type=int, default=500, help="branch limit (422)")
    parser.add_argument(
        "--clone-strategy",
        choices=["file_copy", "wal_log", "auto"],
        default="file_copy",
        help="STRATEGY of CREATE DATABASE for clones (PostgreSQL 15+; auto: the faster one,"
        " measured on the server)",
    )
    parser.add_argument(
        "--no-endpoint-proxy",
        action="store_true",
        help="endpoints report the server's host instead of a listener of their own",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (logs go to stderr)",
    )
    return parser


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    """The latency and fault options (see ``FaultSettings``)."""
    parser.add_argument("--request-delay", type=_non_negative, default=0.0, metavar="S")
    parser.add_argument(
        "--operation-delay",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="seconds an operation stays running",
    )
    parser.add_argument(
        "--rate-limit",
        type=_positive,
        default=None,
        metavar="N",
        help="requests per second before 429 with Retry-After",
    )
    parser.add_argument(
        "--fail-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability of a random 503/423 on mutating calls",
    )
    parser.add_argument(
        "--fail-operations",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that a create or restore operation ends failed, doing nothing",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of --fail-rate and --fail-operations"
    )


def write_ready_file(path: Path, emulator: Emulator) -> None:
    """Write the ready file atomically (temporary file + rename)."""
    data = {
        "api_host": emulator.api_host,
        "project_id": emulator.project_id,
        "api_key": emulator.api_key,
        "default_branch_id": emulator.default_branch_id,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.write("\n")
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the exit status."""
    args = build_parser().parse_args(argv)
    register_secret(args.api_key)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    embedded: Any = None
    try:
        url = args.postgres_url
        if not url:
            from pytest_neon.local.launcher import start_postgres

            log.info("starting an embedded PostgreSQL")
            embedded = start_postgres()
            url = embedded.url
        emulator = Emulator(
            url,
            host=args.host,
            port=args.port,
            project_id=args.project_id,
            api_key=args.api_key,
            request_delay=args.request_delay,
            operation_delay=args.operation_delay,
            rate_limit=args.rate_limit,
            fail_rate=args.fail_rate,
            seed=args.seed,
            max_branches=args.max_branches,
            fail_operations=args.fail_operations,
            clone_strategy=args.clone_strategy.upper(),
            endpoint_proxy=not args.no_endpoint_proxy,
        )
        emulator.start()
        if emulator.endpoint_tls is False:
            log.warning("endpoint hosts serve without TLS: %s", TLS_EXTRA)
        try:
            if args.ready_file:
                write_ready_file(args.ready_file, emulator)
            while not stop.wait(1.0):
                pass
        finally:
            emulator.stop()
            if args.ready_file:
                args.ready_file.unlink(missing_ok=True)
    except Exception as exc:
        log.error("emulator failed: %s", redact(f"{type(exc).__name__}: {exc}"))
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
