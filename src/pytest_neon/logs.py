"""pytest-neon's log records go to pytest's log handlers, not to the application's.

An application under test often configures the root logger (Django's ``LOGGING``, a
``basicConfig`` in ``conftest.py``); records of the plugin and of its in-process emulator
would come out through those handlers, in the middle of the tests' output. Instead they
reach only the handlers pytest installs (captured logs of a failing test, ``--log-cli-level``,
``--log-file``, ``caplog``), at the levels pytest's options set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

LOGGER = "pytest_neon"


class _ToPytest(logging.Handler):
    """Hands each record to pytest's own handlers on the root logger."""

    def emit(self, record: logging.LogRecord) -> None:
        # pytest 8.4+ attaches its handlers to loggers that do not propagate too: those
        # have the record already
        own = logging.getLogger(LOGGER).handlers
        for handler in list(logging.getLogger().handlers):
            if _is_pytests(handler) and handler not in own and record.levelno >= handler.level:
                handler.handle(record)


def _is_pytests(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest.")


def route_to_pytest() -> Callable[[], None]:
    """Send ``pytest_neon`` records to pytest's handlers only; returns the undo."""
    logger = logging.getLogger(LOGGER)
    if any(isinstance(h, _ToPytest) for h in logger.handlers):
        return lambda: None
    handler = _ToPytest()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.propagate = propagate

    return undo
