"""The runs app's URLs, under /v1/ (sentinel_site/urls.py)."""

from django.urls import path

from runs.api import views

urlpatterns = [
    path("runs", views.RunsView.as_view(), name="runs"),
    path("runs/<uuid:run_id>", views.RunView.as_view(), name="run"),
    path("runs/<uuid:run_id>/events", views.RunEventsView.as_view(), name="run-events"),
    path("runs/<uuid:run_id>/cancel", views.RunCancelView.as_view(), name="run-cancel"),
    path("config/schema", views.ConfigSchemaView.as_view(), name="config-schema"),
]
