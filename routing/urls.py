"""The routing app's URLs, under /v1/ (sentinel_site/urls.py): model groups."""

from rest_framework.routers import SimpleRouter

from routing import api

router = SimpleRouter(trailing_slash=False)
router.register("model-groups", api.ModelGroupViewSet, basename="model-group")

urlpatterns = router.urls
