from django.apps import AppConfig


class ResponsesConfig(AppConfig):
    """OpenAI's Responses API, each response an ordinary turn of the agent named as its model."""

    name = "responses"
    label = "responses"
    default_auto_field = "django.db.models.BigAutoField"
