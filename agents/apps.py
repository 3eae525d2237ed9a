from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        # Both imported here, where the receiver is connected: apps.py is loaded before any app's models.
        from django.db.backends.signals import connection_created

        from sentinel_site import db, metrics

        connection_created.connect(metrics.count_queries, dispatch_uid="sentinel-count-queries")
        connection_created.connect(db.use_fast_timestamps, dispatch_uid="sentinel-fast-timestamps")
        connection_created.connect(db.watch_pool, dispatch_uid="sentinel-watch-pool")
        from agents.models import Agent  # the registry is ready now
        from sentinel_site import config_cache

        config_cache.watch(Agent)
