"""The JSON views, through Django's test client (``db``: rolled back)."""

import json

import pytest
from library.models import Author, Book

pytestmark = pytest.mark.django_db


def test_book_list(client):
    response = client.get("/api/books/")
    assert response.status_code == 200
    books = response.json()["books"]
    assert [b["title"] for b in books] == ["A Wizard of Earthsea", "The Dispossessed", "Kindred"]
    assert books[0]["author"] == "Ursula K. Le Guin"


def test_author_detail_and_404(client):
    author = Author.objects.get(name="Ursula K. Le Guin")
    response = client.get(f"/api/authors/{author.pk}/")
    assert response.json() == {
        "id": author.pk,
        "name": "Ursula K. Le Guin",
        "books": ["A Wizard of Earthsea", "The Dispossessed"],
    }
    assert client.get("/api/authors/999999/").status_code == 404


def test_add_a_review_and_see_the_rating(client):
    book = Book.objects.get(title="Kindred")
    for rating in (4, 5):
        response = client.post(
            f"/api/books/{book.pk}/reviews/",
            data=json.dumps({"rating": rating, "text": "gripping"}),
            content_type="application/json",
        )
        assert response.status_code == 201
    bad = client.post(
        f"/api/books/{book.pk}/reviews/", data='{"rating": 9}', content_type="application/json"
    )
    assert bad.status_code == 400
    listed = client.get("/api/books/", {"author": book.author_id}).json()["books"]
    assert listed == [
        {
            "id": book.pk,
            "title": "Kindred",
            "author": "Octavia E. Butler",
            "published": 1979,
            "reviews": 2,
            "rating": 4.5,
        }
    ]
