from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Governance"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from budgets import schema, signals  # noqa: F401 - registers the OpenAPI auth extension and the signals
        from budgets.admin_roles import sync_groups  # imports auth's models: only once the registry is ready

        post_migrate.connect(sync_groups, sender=self)
        from budgets.models import ApiKey, Budget, Price, Tenant  # the registry is ready now
        from sentinel_site import config_cache

        config_cache.watch(ApiKey, Budget, Price, Tenant)
