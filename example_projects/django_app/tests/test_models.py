"""Model tests with ``db``: each test runs in a transaction that is rolled back."""

import pytest
from django.db import IntegrityError, transaction
from library.models import Author, Book, Review

pytestmark = pytest.mark.django_db


def test_the_data_migration_seeded_the_catalogue():
    assert set(Author.objects.values_list("name", flat=True)) == {
        "Ursula K. Le Guin",
        "Octavia E. Butler",
    }
    assert Book.objects.count() == 3


def test_an_author_has_books():
    author = Author.objects.create(name="Iain M. Banks", born=1954)
    Book.objects.create(author=author, title="Consider Phlebas", published=1987)
    Book.objects.create(author=author, title="The Player of Games", published=1988)
    assert list(author.books.values_list("title", flat=True)) == [
        "Consider Phlebas",
        "The Player of Games",
    ]


def test_rows_of_the_previous_test_were_rolled_back():
    assert not Author.objects.filter(name="Iain M. Banks").exists()


def test_the_database_checks_ratings():
    book = Book.objects.get(title="Kindred")
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.create(book=book, rating=6)
    Review.objects.create(book=book, rating=5)
    assert book.reviews.count() == 1


def test_a_title_is_unique_per_author():
    author = Author.objects.get(name="Octavia E. Butler")
    with pytest.raises(IntegrityError), transaction.atomic():
        Book.objects.create(author=author, title="Kindred", published=2003)
