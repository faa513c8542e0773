"""Authors write books; readers review them."""

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=200, unique=True)
    born = models.PositiveSmallIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    title = models.CharField(max_length=300)
    published = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["published", "title"]
        constraints = [
            models.UniqueConstraint(fields=["author", "title"], name="unique_title_per_author")
        ]

    def __str__(self) -> str:
        return self.title


class Review(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="reviews")
    rating = models.PositiveSmallIntegerField()
    text = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rating__gte=1, rating__lte=5), name="rating_1_to_5"
            )
        ]
