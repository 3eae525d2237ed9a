"""/v1/webhook_endpoints (the openai client's `client.webhooks`) and /v1/webhooks (the same resource):
register, list, read, update, delete, rotate the secret, send a test event; a delivery log with
re-delivery by hand. The signing secret is shown on creation and rotation only."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from budgets import audit, roles
from sentinel_site import egress, openai_ids, strict
from sentinel_site.errors import ApiError, not_found
from webhooks import outbox, signing, tasks
from webhooks.models import EVENT_TYPES, Delivery, DeliveryAttempt, WebhookEndpoint

ENDPOINT = OpenApiResponse(OpenApiTypes.OBJECT, description="A webhook_endpoint object (with `signing_secret` on creation).")
NOT_FOUND = OpenApiResponse(OpenApiTypes.OBJECT, description="No such endpoint (or not yours).")


class EndpointSerializer(serializers.Serializer):
    url = strict.CharField(max_length=2000, help_text="Where events are POSTed; it must pass the egress allowlist.")
    name = strict.CharField(max_length=200, required=False, allow_blank=True, default="")
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), allow_empty=False, max_length=len(EVENT_TYPES))

    def validate_url(self, value: str) -> str:
        try:
            egress.check_url(value)
        except egress.EgressDenied as denied:
            raise serializers.ValidationError(f"this URL is not allowed: {denied}") from None
        return value


def endpoint_object(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    body = {
        "id": endpoint.api_id,
        "object": "webhook_endpoint",
        "name": endpoint.name,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "enabled": endpoint.enabled,
        "signing_secret_hint": endpoint.secret_hint,
        "created_at": int(endpoint.created_at.timestamp()),
        "updated_at": int(endpoint.updated_at.timestamp()),
    }
    if with_secret:
        body["signing_secret"] = endpoint.secret
    return body


def delivery_object(delivery: Delivery, attempts: list[DeliveryAttempt]) -> dict[str, Any]:
    return {
        "id": f"whd_{delivery.id.hex}",
        "object": "webhook_delivery",
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": [
            {
                "number": a.number,
                "status_code": a.status_code,
                "error": a.error or None,
                "duration_ms": a.duration_ms,
                "created_at": int(a.created_at.timestamp()),
            }
            for a in attempts
        ],
        "next_attempt_at": int(delivery.next_attempt_at.timestamp()) if delivery.status == "pending" else None,
        "created_at": int(delivery.created_at.timestamp()),
        "delivered_at": int(delivery.delivered_at.timestamp()) if delivery.delivered_at else None,
    }


def _endpoint(request, endpoint_id: str) -> WebhookEndpoint:
    found = WebhookEndpoint.objects.filter(tenant=request.user.tenant, id=openai_ids.parse("we_", endpoint_id, "webhook endpoint")).first()
    if found is None:
        raise not_found("webhook endpoint")
    return found


def _audit(request, action: str, endpoint: WebhookEndpoint, fields: list[str]) -> None:
    audit.record(
        action,
        actor=audit.actor_for_key(request.user.api_key),
        tenant_id=endpoint.tenant_id,
        target=endpoint.api_id,
        data={"fields": fields},
    )


class EndpointsView(APIView):
    """Register a webhook endpoint; list yours."""

    required_scopes = {"GET": roles.AGENTS_READ, "POST": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="webhook_endpoints_create",
        summary="Register a webhook endpoint",
        description="Events of the types named are POSTed to `url`, signed as Standard Webhooks says (`webhook-id`, "
        "`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), retried with backoff on anything but a 2xx. "
        "The URL obeys SENTINEL_PROVIDER_ALLOWED_HOSTS, at registration and at every connection. The `signing_secret` "
        "is in this answer only.",
        request=EndpointSerializer,
        responses={200: ENDPOINT, 400: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["webhooks"],
    )
    def post(self, request):
        data = EndpointSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            endpoint = WebhookEndpoint.objects.create(tenant=request.user.tenant, secret=signing.new_secret(), **data.validated_data)
            _audit(request, "webhook.created", endpoint, sorted(data.validated_data))
        return Response(endpoint_object(endpoint, with_secret=True))

    @extend_schema(
        operation_id="webhook_endpoints_list",
        summary="List webhook endpoints",
        parameters=openai_ids.PAGE_PARAMETERS,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["webhooks"],
    )
    def get(self, request):
        endpoints = WebhookEndpoint.objects.filter(tenant=request.user.tenant)
        return Response(openai_ids.page(request, endpoints, "we_", "webhook endpoint", endpoint_object))


class EndpointView(APIView):
    """One endpoint: read, update (POST, as OpenAI's client sends it), delete."""

    required_scopes = {"GET": roles.AGENTS_READ, "POST": roles.AGENTS_WRITE, "DELETE": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="webhook_endpoints_retrieve",
        summary="Read a webhook endpoint",
        responses={200: ENDPOINT, 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def get(self, request, endpoint_id: str):
        return Response(endpoint_object(_endpoint(request, endpoint_id)))

    @extend_schema(
        operation_id="webhook_endpoints_update",
        summary="Update a webhook endpoint",
        request=EndpointSerializer(partial=True),
        responses={200: ENDPOINT, 400: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def post(self, request, endpoint_id: str):
        endpoint = _endpoint(request, endpoint_id)
        data = EndpointSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            for name, value in data.validated_data.items():
                setattr(endpoint, name, value)
            endpoint.updated_at = timezone.now()
            endpoint.save()
            _audit(request, "webhook.updated", endpoint, sorted(data.validated_data))
        return Response(endpoint_object(endpoint))

    @extend_schema(
        operation_id="webhook_endpoints_delete",
        summary="Delete a webhook endpoint",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def delete(self, request, endpoint_id: str):
        endpoint = _endpoint(request, endpoint_id)
        with transaction.atomic():
            _audit(request, "webhook.deleted", endpoint, [])
            endpoint.delete()
        return Response({"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True})


class RotateSecretView(APIView):
    """A new signing secret, shown once; the old one stops signing at once."""

    required_scopes = {"POST": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret",
        summary="Rotate a webhook endpoint's secret",
        request=None,
        responses={200: ENDPOINT, 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def post(self, request, endpoint_id: str):
        if request.data.get("keep_old_secret_active_for_24_hours"):
            raise ApiError(
                400,
                "Keeping the old secret active is not supported.",
                param="keep_old_secret_active_for_24_hours",
                code="unsupported_value",
            )
        endpoint = _endpoint(request, endpoint_id)
        with transaction.atomic():
            endpoint.secret, endpoint.updated_at = signing.new_secret(), timezone.now()
            endpoint.save(update_fields=["secret", "updated_at"])
            _audit(request, "webhook.secret_rotated", endpoint, ["secret"])
        return Response(endpoint_object(endpoint, with_secret=True))


class TestEndpointView(APIView):
    """Send one signed test event now and answer what the receiver said."""

    required_scopes = {"POST": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="webhook_endpoints_test",
        summary="Send a test event",
        request=None,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def post(self, request, endpoint_id: str):
        endpoint = _endpoint(request, endpoint_id)
        event_type = (request.data.get("event_type") if isinstance(request.data, dict) else None) or endpoint.event_types[0]
        with transaction.atomic():
            delivery = Delivery.objects.create(
                tenant=endpoint.tenant,
                endpoint=endpoint,
                event_id=f"evt_test_{timezone.now().strftime('%Y%m%d%H%M%S%f')}",
                event_type=event_type,
                payload={"object": "event", "type": event_type, "test": True, "data": {}},
            )
            delivery.payload["id"] = delivery.event_id
            delivery.save(update_fields=["payload"])
        outbox.send(delivery.id, wake=lambda *_: None)  # one attempt, now: a test is not retried
        delivery.refresh_from_db()
        return Response(
            {
                "object": "webhook_endpoint.test",
                "webhook_endpoint_id": endpoint.api_id,
                "event_type": event_type,
                "status_code": delivery.last_status_code or 0,
                "success": True,
            }
        )


class DeliveriesView(APIView):
    """The delivery log of one endpoint, newest first (the last 100)."""

    required_scopes = {"GET": roles.AGENTS_READ}

    @extend_schema(
        operation_id="webhook_endpoints_deliveries",
        summary="List an endpoint's deliveries",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def get(self, request, endpoint_id: str):
        endpoint = _endpoint(request, endpoint_id)
        deliveries = list(Delivery.objects.filter(endpoint=endpoint).order_by("-created_at")[:100])
        attempts: dict[Any, list[DeliveryAttempt]] = {}
        for attempt in DeliveryAttempt.objects.filter(delivery__in=deliveries).order_by("number"):
            attempts.setdefault(attempt.delivery_id, []).append(attempt)
        return Response({"object": "list", "data": [delivery_object(d, attempts.get(d.id, [])) for d in deliveries]})


class RedeliverView(APIView):
    """Send a delivery again, by hand."""

    required_scopes = {"POST": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="webhook_endpoints_redeliver",
        summary="Re-deliver an event",
        request=None,
        responses={202: OpenApiResponse(OpenApiTypes.OBJECT), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def post(self, request, endpoint_id: str, delivery_id: str):
        endpoint = _endpoint(request, endpoint_id)
        delivery = Delivery.objects.filter(endpoint=endpoint, id=openai_ids.parse("whd_", delivery_id, "delivery")).first()
        if delivery is None:
            raise not_found("delivery")
        outbox.redeliver(delivery, tasks.wake)
        return Response({"id": delivery_id, "object": "webhook_delivery", "status": "pending"}, status=202)
