"""The routing app's URLs, under /v1/ (sentinel_site/urls.py): model groups, agents' routing policies."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from routing import api, policy_api

router = SimpleRouter(trailing_slash=False)
router.register("model-groups", api.ModelGroupViewSet, basename="model-group")

urlpatterns = [
    *router.urls,
    path("agents/<str:name>/routing-policy", policy_api.PolicyView.as_view(), name="routing-policy"),
    path("agents/<str:name>/cache", policy_api.CacheView.as_view(), name="routing-cache"),
]
