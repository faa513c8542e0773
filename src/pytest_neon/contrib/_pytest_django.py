# mypy: disable-error-code="import-untyped"
"""Everything the Django integration takes from pytest-django and Django beyond their
documented API, in one place: where pytest-django or Django change, look here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# (The Django fixtures also override pytest-django's private ``_django_db_helper``
# fixture, the one that opens a test's database access, to check the branch out first.)

#: fixtures that give a test the database, as pytest-django knows them
DB_FIXTURES = frozenset({"db", "transactional_db", "live_server"})


def settings_configured() -> bool:
    """Whether Django's settings are configured (``DJANGO_SETTINGS_MODULE`` or ``--ds``)."""
    from pytest_django.lazy_django import django_settings_is_configured

    return bool(django_settings_is_configured())


def is_django_test_case(request_or_item: pytest.FixtureRequest | pytest.Item) -> bool:
    """Whether the test is a method of a Django ``TestCase`` / ``TransactionTestCase``."""
    from pytest_django.django_compat import is_django_unittest

    return bool(is_django_unittest(request_or_item))


def marker_options(marker: pytest.Mark) -> tuple[bool, bool, Any]:
    """``transaction``, ``reset_sequences`` and ``databases`` of a ``django_db`` marker."""
    from pytest_django.fixtures import validate_django_db

    options = validate_django_db(marker)
    return bool(options[0]), bool(options[1]), options[2]


def commits(request: pytest.FixtureRequest) -> bool:
    """Whether the test commits its work (pytest-django's rule), instead of rolling it back.

    Django ``TransactionTestCase`` classes that are not ``TestCase``; pytest-style tests
    with ``transaction=True`` or ``reset_sequences=True``, ``transactional_db`` or
    ``live_server``.
    """
    if is_django_test_case(request):
        from django.test import TestCase, TransactionTestCase

        cls = request.cls
        return issubclass(cls, TransactionTestCase) and not issubclass(cls, TestCase)
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        transaction, reset_sequences, _ = marker_options(marker)
        if transaction or reset_sequences:
            return True
    return bool({"transactional_db", "live_server"} & set(request.fixturenames))


def databases_of(item: pytest.Item, all_aliases: str) -> set[str]:
    """The aliases a test uses, as pytest-django decides them."""
    from django.db import connections

    databases: Any = None
    if is_django_test_case(item):
        databases = getattr(getattr(item, "cls", None), "databases", None) or ()
    else:
        marker = item.get_closest_marker("django_db")
        if marker is not None:
            databases = marker_options(marker)[2]
        elif not DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            return set()
    if databases is None:
        return {"default"}
    if databases == all_aliases:
        return set(connections)
    return set(databases)


def patch_flush(
    patch: pytest.MonkeyPatch, managed: Callable[[], set[str]], wrote: Callable[[], None]
) -> None:
    """Make ``TransactionTestCase`` leave the aliases in ``managed()`` to a branch reset
    instead of flushing them (``wrote()`` is called when it would have); other aliases are
    flushed as usual."""
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self: Any) -> None:
        names = set(self._databases_names(include_mirrors=False))
        on_branch = managed()
        if names & on_branch:
            wrote()
        if names - on_branch:
            original(self)  # flush the databases that are not on the branch

    patch.setattr(TransactionTestCase, "_fixture_teardown", _fixture_teardown)
