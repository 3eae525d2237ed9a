from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector must exist before any embedding column; /health/ready checks it is installed."""

    initial = True
    dependencies: list = []
    operations = [VectorExtension()]
