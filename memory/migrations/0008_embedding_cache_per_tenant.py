"""Empty the embedding cache: its keys now hash the tenant with the text (memory/embeddings.content_hash).

A vector cached for one tenant's text answered every tenant's identical text sooner than the model
would, so the time a search took told whether any tenant had ever embedded those exact words. The
rows keyed by the text alone are unreachable under the new keys; they go rather than stay as dead
weight. The memories themselves keep their vectors: nothing is re-embedded but what is asked again.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("memory", "0007_embedding_inline")]

    operations = [migrations.RunSQL("TRUNCATE memory_embeddingcache", reverse_sql=migrations.RunSQL.noop)]
