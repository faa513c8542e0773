from django.urls import path

from library import views

urlpatterns = [
    path("books/", views.book_list, name="book-list"),
    path("books/<int:book_id>/reviews/", views.add_review, name="add-review"),
    path("authors/<int:author_id>/", views.author_detail, name="author-detail"),
]
