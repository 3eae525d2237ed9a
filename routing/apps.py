from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"

    def ready(self) -> None:
        from agents import providers
        from routing import route
        from routing.models import Deployment, ModelGroup, Policy  # the registry is ready now
        from sentinel_site import config_cache

        config_cache.watch(ModelGroup, Deployment, Policy)
        providers.route_model_groups(route.config_for_agent)
