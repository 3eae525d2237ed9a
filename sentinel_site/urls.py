from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from sentinel_site import health, login_throttle, overview, scrape

handler404 = "sentinel_site.errors.handler404"
handler500 = "sentinel_site.errors.handler500"

admin.site.site_header = admin.site.site_title = "Sentinel"
admin.site.index_title = "Control plane"

urlpatterns = [
    # Each app's API from its own urls module; the site only mounts them.
    path("v1/", include("agents.api.history_urls")),
    path("v1/", include("agents.api.urls")),
    path("v1/", include("memory.urls")),
    path("v1/", include("budgets.urls")),
    path("v1/", include("runs.api.urls")),
    path("v1/", include("batches.api.urls")),
    path("v1/", include("responses.api.urls")),
    path("v1/", include("webhooks.api.urls")),
    path("v1/", include("routing.urls")),
    path("health", health.health, name="health"),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", scrape.metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # Before the admin's own URLs: the same address, behind the failed-login throttle.
    path("admin/login/", login_throttle.login, name="admin-login"),
    path("admin/overview/", overview.view(), name="admin-overview"),
    path("admin/", admin.site.urls),
]
