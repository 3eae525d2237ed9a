from django.db import migrations, models
from django.db.models import Exists, OuterRef


def flag_agents_with_memories(apps, schema_editor):
    Agent = apps.get_model("agents", "Agent")
    Memory = apps.get_model("memory", "Memory")
    held = Memory.objects.filter(tenant_id=OuterRef("tenant_id"), agent_id=OuterRef("id"))
    Agent.objects.filter(Exists(held)).update(has_memories=True)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0008_turn_event_kinds"),
        ("memory", "0003_message_pending_by_tenant"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="has_memories",
            field=models.BooleanField(default=False, editable=False, help_text="Long-term memory may hold something of it."),
        ),
        migrations.RunPython(flag_agents_with_memories, migrations.RunPython.noop, elidable=True),
    ]
