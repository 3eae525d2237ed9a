from django.apps import AppConfig


class BatchesConfig(AppConfig):
    """OpenAI's Files and Batch APIs, each line of a batch run as an ordinary turn."""

    name = "batches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents.signals import turn_ended
        from batches.tasks import on_turn_ended

        turn_ended.connect(on_turn_ended, dispatch_uid="batches.on_turn_ended")
