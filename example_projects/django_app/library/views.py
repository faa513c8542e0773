"""A small JSON API over the library."""

import json

from django.db.models import Avg, Count
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from library.models import Author, Book, Review


def _book(book: Book) -> dict[str, object]:
    rating = getattr(book, "rating", None)
    return {
        "id": book.pk,
        "title": book.title,
        "author": book.author.name,
        "published": book.published,
        "reviews": getattr(book, "review_count", 0),
        "rating": round(rating, 2) if rating is not None else None,
    }


@require_GET
def book_list(request: HttpRequest) -> JsonResponse:
    """Every book with its author, number of reviews and average rating."""
    books = (
        Book.objects.select_related("author")
        .annotate(rating=Avg("reviews__rating"), review_count=Count("reviews"))
        .order_by("published", "title")
    )
    if "author" in request.GET:
        books = books.filter(author_id=request.GET["author"])
    return JsonResponse({"books": [_book(b) for b in books]})


@require_GET
def author_detail(request: HttpRequest, author_id: int) -> JsonResponse:
    """One author and the titles of their books."""
    author = Author.objects.filter(pk=author_id).first()
    if author is None:
        return JsonResponse({"error": "no such author"}, status=404)
    titles = list(author.books.values_list("title", flat=True))
    return JsonResponse({"id": author.pk, "name": author.name, "books": titles})


@csrf_exempt
@require_POST
def add_review(request: HttpRequest, book_id: int) -> JsonResponse:
    """Add a review: ``{"rating": 1-5, "text": "..."}``."""
    book = Book.objects.filter(pk=book_id).first()
    if book is None:
        return JsonResponse({"error": "no such book"}, status=404)
    try:
        data = json.loads(request.body)
        rating = int(data["rating"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "send JSON with a rating"}, status=400)
    if not 1 <= rating <= 5:
        return JsonResponse({"error": "rating must be 1 to 5"}, status=400)
    review = Review.objects.create(book=book, rating=rating, text=str(data.get("text", "")))
    return JsonResponse({"id": review.pk, "book": book.pk, "rating": rating}, status=201)
