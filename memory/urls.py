"""The memory app's URLs, under /v1/ (sentinel_site/urls.py): what memory keeps of a conversation,
beside the agents app's conversation resource on the same paths, and long-term memory."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from memory import api

# The same prefix and basename as agents/api/urls.py's conversations: this router adds only the
# detail actions (messages, summaries, consolidate, forgetting a message), so URLs and names stay.
router = SimpleRouter(trailing_slash=False)
router.register("conversations", api.ConversationMemoryViewSet, basename="conversation")

urlpatterns = [
    path("conversations/<uuid:conversation_id>/context", api.ContextView.as_view(), name="conversation-context"),
    path("memory/search", api.MemorySearchView.as_view(), name="memory-search"),
    path("memory/<uuid:memory_id>", api.MemoryDeleteView.as_view(), name="memory-delete"),
    *router.urls,
]
