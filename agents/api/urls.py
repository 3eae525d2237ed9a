"""The agents app's URLs, under /v1/ (sentinel_site/urls.py): chat completions, turns and their events,
models, agents, conversations (list, read, create), dead letters, and control of running work
(cancel, interrupt, resume, approvals)."""

from django.urls import path
from rest_framework.routers import Route, SimpleRouter

from agents.api import chat, control, resources


class Router(SimpleRouter):
    """SimpleRouter, with a detail route's POST going to the viewset's `modify` if it has one: OpenAI's
    Conversations API updates by POST /v1/conversations/{id}."""

    routes = [
        route._replace(mapping={**route.mapping, "post": "modify"}) if isinstance(route, Route) and route.detail else route
        for route in SimpleRouter.routes
    ]


router = Router(trailing_slash=False)
router.register("agents", resources.AgentViewSet, basename="agent")
router.register("conversations", resources.ConversationViewSet, basename="conversation")
router.register("turns", resources.TurnViewSet, basename="turn")

urlpatterns = [
    path("chat/completions", chat.ChatCompletionsView.as_view(), name="chat-completions"),
    path("turns/<uuid:turn_id>/events", chat.TurnEventsView.as_view(), name="turn-events"),
    path("turns/<uuid:turn_id>/cancel", control.TurnCancelView.as_view(), name="turn-cancel"),
    path("turns/<uuid:turn_id>/interrupt", control.TurnInterruptView.as_view(), name="turn-interrupt"),
    path("turns/<uuid:turn_id>/resume", control.TurnResumeView.as_view(), name="turn-resume"),
    path("conversations/<uuid:conversation_id>/interrupt", control.ConversationInterruptView.as_view(), name="conversation-interrupt"),
    path("approvals", control.ApprovalListView.as_view(), name="approvals"),
    path("approvals/<str:approval_id>", control.ApprovalView.as_view(), name="approval"),
    path("models", resources.ModelsView.as_view(), name="models"),
    path("dead-letters", resources.DeadLetterView.as_view(), name="dead-letters"),
    path("dead-letters/<uuid:letter_id>/redrive", resources.DeadLetterView.as_view(), name="dead-letter-redrive"),
    *router.urls,
]
