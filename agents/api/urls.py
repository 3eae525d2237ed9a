from django.urls import path
from rest_framework.routers import SimpleRouter

from agents.api import chat, resources
from memory import api as memory_api

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
    path("conversations/<uuid:conversation_id>/context", memory_api.ContextView.as_view(), name="conversation-context"),
    path("memory/search", memory_api.MemorySearchView.as_view(), name="memory-search"),
    path("memory/<uuid:memory_id>", memory_api.MemoryDeleteView.as_view(), name="memory-delete"),
    *router.urls,
]
