"""The responses app's URLs, under /v1/ (sentinel_site/urls.py)."""

from django.urls import path

from responses.api import conversations, views

urlpatterns = [
    path("responses", views.ResponsesView.as_view(), name="responses"),
    path("responses/<str:response_id>", views.ResponseView.as_view(), name="response"),
    path("responses/<str:response_id>/cancel", views.ResponseCancelView.as_view(), name="response-cancel"),
    path("responses/<str:response_id>/input_items", views.ResponseInputItemsView.as_view(), name="response-input-items"),
    path("conversations/<uuid:conversation_id>/items", conversations.ConversationItemsView.as_view(), name="conversation-items"),
    path(
        "conversations/<uuid:conversation_id>/items/<str:item_id>", conversations.ConversationItemView.as_view(), name="conversation-item"
    ),
]
