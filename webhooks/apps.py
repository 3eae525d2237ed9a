from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed webhooks (Standard Webhooks) for turns, runs, responses and batches, from a durable outbox."""

    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents.signals import turn_ended
        from batches.signals import batch_ended
        from runs.ended import run_ended
        from sentinel_site import config_cache
        from webhooks import events
        from webhooks.models import WebhookEndpoint

        turn_ended.connect(events.on_turn_ended, dispatch_uid="webhooks.on_turn_ended")
        batch_ended.connect(events.on_batch_ended, dispatch_uid="webhooks.on_batch_ended")
        run_ended.connect(events.on_run_ended, dispatch_uid="webhooks.on_run_ended")
        config_cache.watch(WebhookEndpoint)  # which tenants have endpoints: cached, as keys and agents are
