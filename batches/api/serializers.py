"""Request bodies of the Files and Batch APIs (validation and the OpenAPI document)."""

from __future__ import annotations

from rest_framework import serializers

from batches.endpoints import ENDPOINTS
from batches.processing import COMPLETION_WINDOWS
from sentinel_site import strict


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A JSONL file: one {custom_id, method, url, body} request a line.")
    purpose = serializers.ChoiceField(choices=["batch"], help_text="Only `batch` files are taken.")


def _metadata(value: dict) -> dict:
    if len(value) > 16 or any(not isinstance(k, str) or len(k) > 64 for k in value):
        raise serializers.ValidationError("at most 16 keys of at most 64 characters")
    if any(not isinstance(v, str) or len(v) > 512 for v in value.values()):
        raise serializers.ValidationError("values must be strings of at most 512 characters")
    return value


class BatchCreateSerializer(serializers.Serializer):
    input_file_id = strict.CharField(max_length=64, help_text="A file uploaded with purpose `batch`.")
    endpoint = serializers.ChoiceField(choices=sorted(ENDPOINTS), help_text="The endpoint every line calls.")
    completion_window = serializers.ChoiceField(choices=sorted(COMPLETION_WINDOWS))
    metadata = serializers.DictField(required=False, allow_null=True, validators=[_metadata], help_text="Up to 16 string pairs.")
