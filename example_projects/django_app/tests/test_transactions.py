"""Tests that commit (``transactional_db``): the branch is reset after each of them."""

import os

import psycopg
import pytest
from library.models import Author, Book


@pytest.mark.django_db(transaction=True)
def test_a_commit_is_visible_to_other_connections():
    Author.objects.create(name="Committed Author")
    Book.objects.all().delete()
    # another connection to the branch sees the committed state
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM library_author")]
        books = conn.execute("SELECT count(*) FROM library_book").fetchone()
    assert "Committed Author" in names
    assert books == (0,)


@pytest.mark.django_db(transaction=True)
def test_the_committed_rows_are_gone_and_the_seed_is_back():
    # Django would have flushed every table (seed rows included); the branch was reset
    assert not Author.objects.filter(name="Committed Author").exists()
    assert Book.objects.count() == 3
