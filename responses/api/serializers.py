"""The Responses API's request body (validation and the OpenAPI document)."""

from __future__ import annotations

from rest_framework import serializers

from sentinel_site import strict


class ResponseCreateSerializer(serializers.Serializer):
    model = strict.CharField(max_length=200, help_text="One of your agents (GET /v1/models).")
    input = serializers.JSONField(help_text="A string, or a list of input items (messages, function_call, function_call_output).")
    instructions = strict.CharField(required=False, allow_null=True, allow_blank=True, help_text="A system message for this turn.")
    previous_response_id = strict.CharField(
        required=False, allow_null=True, max_length=64, help_text="Continue that response's conversation."
    )
    conversation = serializers.JSONField(required=False, allow_null=True, help_text="A conversation id (or {id}) to continue.")
    tools = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True, help_text="Function tools.")
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    text = serializers.DictField(required=False, allow_null=True, help_text="`{format: {type: text|json_object|json_schema, ...}}`.")
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_output_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    store = serializers.BooleanField(required=False, default=True)
    background = serializers.BooleanField(required=False, default=False, help_text="Answer `queued` at once; retrieve it later.")
    stream = serializers.BooleanField(required=False, default=False, help_text="Typed SSE events with sequence numbers.")
    metadata = serializers.DictField(child=strict.CharField(max_length=512), required=False, allow_null=True)
    user = strict.CharField(required=False, allow_null=True, max_length=256)

    def validate(self, attrs):
        if attrs.get("background") and not attrs.get("store", True):
            raise serializers.ValidationError({"background": "a background response must be stored (`store: true`)"})
        if attrs.get("background") and attrs.get("stream"):
            raise serializers.ValidationError({"stream": "stream a background response with GET /v1/responses/{id}?stream=true"})
        return attrs
