"""The webhooks app's URLs, under /v1/: OpenAI's `webhook_endpoints`, and `webhooks` for the same resource
(the same views, under operation ids of their own in the OpenAPI document)."""

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_view

from webhooks.api import views


def _alias(view: type, **operation_ids: str) -> type:
    """The view again, for /v1/webhooks: its operations renamed (all else as documented), so no id is used twice."""
    renamed = {method: extend_schema(operation_id=f"webhooks_{name}") for method, name in operation_ids.items()}
    return extend_schema_view(**renamed)(type(view.__name__, (view,), {"__doc__": view.__doc__}))


VIEWS = {
    "webhook_endpoints": (
        views.EndpointsView,
        views.EndpointView,
        views.RotateSecretView,
        views.TestEndpointView,
        views.DeliveriesView,
        views.RedeliverView,
    ),
    "webhooks": (
        _alias(views.EndpointsView, get="list", post="create"),
        _alias(views.EndpointView, get="retrieve", post="update", delete="delete"),
        _alias(views.RotateSecretView, post="rotate_secret"),
        _alias(views.TestEndpointView, post="test"),
        _alias(views.DeliveriesView, get="deliveries"),
        _alias(views.RedeliverView, post="redeliver"),
    ),
}

urlpatterns = [
    route
    for prefix, (endpoints, endpoint, rotate, test, deliveries, redeliver) in VIEWS.items()
    for route in (
        path(prefix, endpoints.as_view(), name=f"{prefix}"),
        path(f"{prefix}/<str:endpoint_id>", endpoint.as_view(), name=f"{prefix}-detail"),
        path(f"{prefix}/<str:endpoint_id>/rotate_secret", rotate.as_view(), name=f"{prefix}-rotate-secret"),
        path(f"{prefix}/<str:endpoint_id>/test", test.as_view(), name=f"{prefix}-test"),
        path(f"{prefix}/<str:endpoint_id>/deliveries", deliveries.as_view(), name=f"{prefix}-deliveries"),
        path(f"{prefix}/<str:endpoint_id>/deliveries/<str:delivery_id>/redeliver", redeliver.as_view(), name=f"{prefix}-redeliver"),
    )
]
