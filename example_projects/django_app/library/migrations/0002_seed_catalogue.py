"""Seed the catalogue: data that every test sees, also after a test that committed."""

from django.db import migrations

CATALOGUE = {
    "Ursula K. Le Guin": (1929, [("A Wizard of Earthsea", 1968), ("The Dispossessed", 1974)]),
    "Octavia E. Butler": (1947, [("Kindred", 1979)]),
}


def seed(apps, schema_editor):
    Author = apps.get_model("library", "Author")
    Book = apps.get_model("library", "Book")
    for name, (born, books) in CATALOGUE.items():
        author = Author.objects.create(name=name, born=born)
        for title, published in books:
            Book.objects.create(author=author, title=title, published=published)


def unseed(apps, schema_editor):
    apps.get_model("library", "Author").objects.filter(name__in=CATALOGUE).delete()


class Migration(migrations.Migration):
    dependencies = [("library", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
