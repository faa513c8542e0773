"""A real HTTP server thread on the same branch (``live_server`` commits, like Django's)."""

import json
import urllib.request

from library.models import Author, Book, Review


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_the_server_sees_data_committed_by_the_test(live_server):
    author = Author.objects.create(name="N. K. Jemisin", born=1972)
    Book.objects.create(author=author, title="The Fifth Season", published=2015)
    titles = [b["title"] for b in _get(live_server.url + "/api/books/")["books"]]
    assert titles == ["A Wizard of Earthsea", "The Dispossessed", "Kindred", "The Fifth Season"]


def test_the_test_sees_data_written_through_the_server(live_server):
    book = Book.objects.get(title="The Dispossessed")
    request = urllib.request.Request(
        f"{live_server.url}/api/books/{book.pk}/reviews/",
        data=json.dumps({"rating": 5, "text": "ambiguous utopia"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    assert Review.objects.get().text == "ambiguous utopia"
    assert not Author.objects.filter(name="N. K. Jemisin").exists()
