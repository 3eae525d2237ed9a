from django.conf import settings
from django.db import migrations, models


def _legacy_model() -> str:
    """The model that wrote the memories already stored: until this migration, `local` (the default)
    meant all-MiniLM-L6-v2 and `openai` the configured OpenAI model; `static` did not exist."""
    conf = settings.SENTINEL
    return conf["EMBEDDING_MODEL"] if conf["EMBEDDINGS"] == "openai" else "all-MiniLM-L6-v2"


class Migration(migrations.Migration):
    dependencies = [
        ("memory", "0003_message_pending_by_tenant"),
    ]

    operations = [
        # A constant default: PostgreSQL adds the column without rewriting the table.
        migrations.AddField(
            model_name="memory",
            name="embedding_model",
            field=models.CharField(default=_legacy_model, max_length=100),
            preserve_default=False,
        ),
    ]
