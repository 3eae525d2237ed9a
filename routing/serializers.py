"""The model group API's shapes. Deployment credentials are write-only: never in an answer."""

from __future__ import annotations

from django.db import transaction
from rest_framework import serializers

from routing.models import Deployment, ModelGroup, Policy
from sentinel_site import egress, strict
from sentinel_site.errors import ApiError


class DeploymentSerializer(strict.ModelSerializer):
    """One endpoint of a model group."""

    api_key = strict.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Write-only. Sent only to this deployment's base_url. Omitted on an update: the stored key is kept.",
    )
    has_api_key = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = ["name", "base_url", "api_key", "has_api_key", "provider_model", "weight", "rpm", "tpm", "enabled"]
        extra_kwargs = {"weight": {"max_value": 1_000_000}, "rpm": {"min_value": 1}, "tpm": {"min_value": 1}}

    def get_has_api_key(self, deployment: Deployment) -> bool:
        return bool(deployment.api_key)

    def validate_base_url(self, value: str) -> str:
        try:  # a group made through the API is always its tenant's: its URLs are tenant-chosen
            egress.check_url(value)
        except egress.EgressDenied as denied:
            raise serializers.ValidationError(f"this URL is not allowed: {denied}") from None
        return value


def _names(help_text: str) -> serializers.ListField:
    return serializers.ListField(child=strict.SlugField(max_length=64), max_length=10, required=False, help_text=help_text)


class ModelGroupSerializer(strict.ModelSerializer):
    """A model group of the caller's tenant: an agent whose `model` is its name is routed through it."""

    deployments = DeploymentSerializer(many=True, help_text="Replaced as a whole on update; a deployment keeps its key by name.")
    fallbacks = _names("Groups tried in order when every deployment fails or is rate limited.")
    context_window_fallbacks = _names("Groups tried in order on context_length_exceeded.")
    content_policy_fallbacks = _names("Groups tried in order on a content-policy refusal.")

    class Meta:
        model = ModelGroup
        fields = [
            "id",
            "name",
            "strategy",
            "context_window",
            "fallbacks",
            "context_window_fallbacks",
            "content_policy_fallbacks",
            "deployments",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_name(self, value: str) -> str:
        clash = ModelGroup.objects.filter(tenant=self.context["tenant"], name=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise ApiError(409, "A model group with this name already exists.", param="name", code="model_group_name_taken")
        return value

    def validate_deployments(self, value: list[dict]) -> list[dict]:
        names = [item["name"] for item in value]
        if len(set(names)) != len(names):
            raise serializers.ValidationError("deployment names must be unique within the group")
        if len(value) > 50:
            raise serializers.ValidationError("at most 50 deployments")
        return value

    def validate(self, attrs: dict) -> dict:
        name = attrs.get("name", getattr(self.instance, "name", None))
        for field in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            if name in attrs.get(field, []):
                raise serializers.ValidationError({field: "a group cannot fall back to itself"})
        return attrs

    def create(self, validated_data: dict) -> ModelGroup:
        deployments = validated_data.pop("deployments")
        with transaction.atomic():
            group = ModelGroup.objects.create(**validated_data)
            Deployment.objects.bulk_create(Deployment(group=group, **item) for item in deployments)
        return group

    def update(self, instance: ModelGroup, validated_data: dict) -> ModelGroup:
        deployments = validated_data.pop("deployments", None)
        with transaction.atomic():
            group = super().update(instance, validated_data)
            if deployments is not None:
                existing = {d.name: d for d in group.deployments.all()}
                group.deployments.exclude(name__in=[item["name"] for item in deployments]).delete()
                for item in deployments:
                    deployment = existing.get(item["name"]) or Deployment(group=group)
                    moved = deployment.pk is not None and deployment.base_url != item["base_url"]
                    if moved and "api_key" not in item:
                        deployment.api_key = ""  # a key goes only where its owner sent it (as Agent.save)
                    for field, value in item.items():
                        setattr(deployment, field, value)
                    deployment.save()
        return group


class PolicySerializer(serializers.ModelSerializer):
    """An agent's routing policy: shared streams and the response cache, each opt-in."""

    cache_seconds = serializers.IntegerField(min_value=0, max_value=30 * 86400, required=False)

    class Meta:
        model = Policy
        fields = (
            "dedup",
            "dedup_deterministic",
            "cache_seconds",
            "cache_always",
            "cache_history",
            "adaptive",
            "simple_group",
            "complex_group",
            "complex_above_tokens",
            "complex_with_tools",
            "complex_by_cues",
            "updated_at",
        )
        read_only_fields = ("updated_at",)
