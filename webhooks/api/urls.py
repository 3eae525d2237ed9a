"""The webhooks app's URLs, under /v1/: OpenAI's `webhook_endpoints`, and `webhooks` for the same resource."""

from django.urls import path

from webhooks.api import views

urlpatterns = [
    route
    for prefix in ("webhook_endpoints", "webhooks")
    for route in (
        path(prefix, views.EndpointsView.as_view(), name=f"{prefix}"),
        path(f"{prefix}/<str:endpoint_id>", views.EndpointView.as_view(), name=f"{prefix}-detail"),
        path(f"{prefix}/<str:endpoint_id>/rotate_secret", views.RotateSecretView.as_view(), name=f"{prefix}-rotate-secret"),
        path(f"{prefix}/<str:endpoint_id>/test", views.TestEndpointView.as_view(), name=f"{prefix}-test"),
        path(f"{prefix}/<str:endpoint_id>/deliveries", views.DeliveriesView.as_view(), name=f"{prefix}-deliveries"),
        path(
            f"{prefix}/<str:endpoint_id>/deliveries/<str:delivery_id>/redeliver", views.RedeliverView.as_view(), name=f"{prefix}-redeliver"
        ),
    )
]
