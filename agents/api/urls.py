"""The agents app's URLs, under /v1/ (sentinel_site/urls.py): chat completions, turns and their events,
models, agents, conversations (list, read, create), dead letters."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from agents.api import chat, resources

router = SimpleRouter(trailing_slash=False)
router.register("agents", resources.AgentViewSet, basename="agent")
router.register("conversations", resources.ConversationViewSet, basename="conversation")
router.register("turns", resources.TurnViewSet, basename="turn")

urlpatterns = [
    path("chat/completions", chat.ChatCompletionsView.as_view(), name="chat-completions"),
    path("turns/<uuid:turn_id>/events", chat.TurnEventsView.as_view(), name="turn-events"),
    path("models", resources.ModelsView.as_view(), name="models"),
    path("dead-letters", resources.DeadLetterView.as_view(), name="dead-letters"),
    path("dead-letters/<uuid:letter_id>/redrive", resources.DeadLetterView.as_view(), name="dead-letter-redrive"),
    *router.urls,
]
