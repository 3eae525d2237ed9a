"""The history API's URLs, under /v1/ (sentinel_site/urls.py mounts them before agents/api/urls.py):
an agent's transitions, a turn's replay, a conversation's fork (agents/api/history.py)."""

from django.urls import path

from agents.api import history

urlpatterns = [
    path("agents/<uuid:agent_id>/transitions", history.AgentTransitionsView.as_view(), name="agent-transitions"),
    path("turns/<uuid:turn_id>/replay", history.TurnReplayView.as_view(), name="turn-replay"),
    path("conversations/<uuid:conversation_id>/fork", history.ConversationForkView.as_view(), name="conversation-fork"),
]
