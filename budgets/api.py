"""The governance API: budgets, pricing, usage, audit and API keys, each for the caller's tenant."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from budgets import audit, keys, roles, spend
from budgets.models import ApiKey, AuditEntry, Budget, BudgetWindow, Period, Price, SpendEntry
from budgets.roles import Role
from sentinel_site import config_cache, strict
from sentinel_site.errors import ApiError, not_found
from sentinel_site.pagination import CursorPagination
from sentinel_site.params import IntegerParam, TextParam


class BudgetInSerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=Period.choices)
    limit = strict.DecimalField(max_digits=14, decimal_places=6, help_text="USD per period.")
    api_key = strict.CharField(required=False, allow_null=True, help_text="A key id (the part after snt_); null: the tenant.")
    soft_limit_share = strict.DecimalField(
        max_digits=4, decimal_places=3, max_value=1, pattern=r"^(0(\.\d{1,3})?|1(\.0{1,3})?)$", required=False, default="0.8"
    )
    fallback_model = strict.CharField(required=False, allow_blank=True, default="", max_length=200)


class BudgetsInSerializer(serializers.Serializer):
    budgets = BudgetInSerializer(many=True, allow_empty=False)


def budget_view(standing: spend.Standing) -> dict:
    budget = standing.budget
    return {
        "id": str(budget.id),
        "period": budget.period,
        "api_key": budget.api_key.key_id if budget.api_key_id else None,
        "limit": str(budget.limit),
        "soft_limit_share": str(budget.soft_limit_share),
        "fallback_model": budget.fallback_model,
        "window_start": str(spend.window_start(budget.period)),
        "settled": str(standing.settled),
        "reserved": str(standing.reserved),
        "remaining": str(max(budget.limit - standing.settled - standing.reserved, 0)),
        "resets_in_seconds": spend.seconds_until_reset(budget.period),
    }


class BudgetsView(APIView):
    """GET/PUT /v1/budgets: the tenant's and its keys' daily and monthly budgets, with spend against limit."""

    required_scopes = {"GET": roles.BUDGETS_ADMIN, "PUT": roles.BUDGETS_ADMIN}

    def _all(self, tenant) -> list[dict]:
        budgets = Budget.objects.filter(tenant=tenant).select_related("api_key").order_by("api_key_id", "period")
        return [budget_view(s) for b in budgets for s in [_standing(b)]]

    @extend_schema(summary="List budgets", responses=OpenApiResponse(OpenApiTypes.OBJECT), tags=["governance"])
    def get(self, request):
        return Response({"object": "list", "data": self._all(request.user.tenant)})

    @extend_schema(summary="Set budgets", request=BudgetsInSerializer, responses=OpenApiResponse(OpenApiTypes.OBJECT), tags=["governance"])
    def put(self, request):
        data = BudgetsInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = request.user.tenant
        with transaction.atomic():
            for index, item in enumerate(data.validated_data["budgets"]):
                api_key = None
                if item.get("api_key"):
                    api_key = ApiKey.objects.filter(tenant=tenant, key_id=item["api_key"]).first()
                    if api_key is None:
                        raise ApiError(404, "No such API key in this tenant.", param=f"budgets[{index}].api_key", code="key_not_found")
                budget, _ = Budget.objects.update_or_create(
                    tenant=tenant,
                    api_key=api_key,
                    period=item["period"],
                    defaults={
                        "limit": item["limit"],
                        "soft_limit_share": item["soft_limit_share"],
                        "fallback_model": item["fallback_model"],
                    },
                )
                audit.record(
                    "budget.changed",
                    actor=audit.actor_for_key(request.user.api_key),
                    tenant_id=tenant.id,
                    target=str(budget.id),
                    data={"period": budget.period, "limit": str(budget.limit), "api_key": item.get("api_key")},
                )
        return Response({"object": "list", "data": self._all(tenant)})


def _standing(budget: Budget) -> spend.Standing:
    window = BudgetWindow.objects.filter(budget=budget, starts=spend.window_start(budget.period)).first()
    return spend.Standing(budget, window.settled if window else 0, window.reserved if window else 0)


class PriceSerializer(strict.ModelSerializer):
    """A model's price in USD per million tokens: global, or this tenant's own."""

    input_per_mtok = strict.DecimalField(max_digits=12, decimal_places=6, help_text="USD per million input tokens.")
    output_per_mtok = strict.DecimalField(max_digits=12, decimal_places=6, help_text="USD per million output tokens.")
    scope = serializers.SerializerMethodField()

    class Meta:
        model = Price
        fields = ["model", "endpoint", "input_per_mtok", "output_per_mtok", "scope", "updated_at"]
        extra_kwargs = {"endpoint": {"required": False}}
        validators = []  # uniqueness is per scope; PUT upserts

    def get_scope(self, price: Price) -> str:
        return "tenant" if price.tenant_id else "global"


class PricesInSerializer(serializers.Serializer):
    prices = PriceSerializer(many=True, allow_empty=False)


class PricingView(APIView):
    """GET/PUT /v1/pricing: prices per model (USD per million tokens). PUT sets this tenant's own prices."""

    required_scopes = {"GET": roles.BUDGETS_ADMIN, "PUT": roles.BUDGETS_ADMIN}

    def _all(self, tenant):
        return PriceSerializer(Price.objects.filter(Q(tenant=tenant) | Q(tenant__isnull=True)).order_by("model", "tenant"), many=True).data

    @extend_schema(summary="List prices", responses=OpenApiResponse(OpenApiTypes.OBJECT), tags=["governance"])
    def get(self, request):
        return Response({"object": "list", "data": self._all(request.user.tenant)})

    @extend_schema(
        summary="Set this tenant's prices", request=PricesInSerializer, responses=OpenApiResponse(OpenApiTypes.OBJECT), tags=["governance"]
    )
    def put(self, request):
        data = PricesInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = request.user.tenant
        for index, item in enumerate(data.validated_data["prices"]):
            _check_tenant_price(item, f"prices[{index}]")
        with transaction.atomic():
            for item in data.validated_data["prices"]:
                Price.objects.update_or_create(
                    tenant=tenant,
                    model=item["model"],
                    endpoint=item.get("endpoint", ""),
                    defaults={"input_per_mtok": item["input_per_mtok"], "output_per_mtok": item["output_per_mtok"]},
                )
            audit.record(
                "pricing.changed",
                actor=audit.actor_for_key(request.user.api_key),
                tenant_id=tenant.id,
                data={"models": [i["model"] for i in data.validated_data["prices"]]},
            )
        return Response({"object": "list", "data": self._all(tenant)})


def _check_tenant_price(item: dict, param: str) -> None:
    """A tenant's price may raise the operator's price for its own accounting, never lower it (a
    zero price would make every call free of budget), unless SENTINEL_TENANT_PRICES_BELOW_GLOBAL."""
    if settings.SENTINEL["TENANT_PRICES_BELOW_GLOBAL"]:
        return
    endpoint = item.get("endpoint", "")
    shared = Price.objects.filter(tenant__isnull=True, model=item["model"], endpoint__in={endpoint, ""}).order_by("-endpoint").first()
    if shared is None:
        if settings.SENTINEL["UNPRICED_MODELS"] == "refuse":
            raise ApiError(
                400, f"The model `{item['model']}` has no price on this deployment; an operator must price it first.",
                param=f"{param}.model", code="model_not_priced",
            )  # fmt: skip
        return
    for side in ("input_per_mtok", "output_per_mtok"):
        if item[side] < getattr(shared, side):
            raise ApiError(
                400, f"{side} may not be below the deployment's price for `{item['model']}` ({getattr(shared, side)}).",
                param=f"{param}.{side}", code="price_below_global",
            )  # fmt: skip


class UsageView(APIView):
    """GET /v1/usage: spend and tokens by key, model and day, from the ledger."""

    required_scopes = {"GET": roles.BUDGETS_ADMIN}
    days = IntegerParam("days", 1, 366, default=30)

    @extend_schema(
        summary="Usage by key, model and day",
        parameters=[days.openapi("Days back from now.")],
        responses=OpenApiResponse(OpenApiTypes.OBJECT),
        tags=["governance"],
    )
    def get(self, request):
        days = self.days.read(request)
        since = timezone.now() - timedelta(days=days)
        rows = (
            SpendEntry.objects.filter(tenant=request.user.tenant, created_at__gte=since)
            .annotate(day=TruncDate("created_at"))
            .values("day", "api_key__key_id", "model")
            .annotate(cost=Sum("cost"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"), calls=Count("id"))
            .order_by("-day", "api_key__key_id", "model")
        )
        data = [
            {
                "day": str(r["day"]),
                "api_key": r["api_key__key_id"],
                "model": r["model"],
                "cost": str(r["cost"]),
                "prompt_tokens": r["prompt_tokens"],
                "completion_tokens": r["completion_tokens"],
                "calls": r["calls"],
            }
            for r in rows
        ]
        return Response({"object": "list", "data": data})


class AuditPagination(CursorPagination):
    ordering = "-seq"
    max_page_size = 500


class AuditView(APIView):
    """GET /v1/audit: this tenant's audit entries, newest first."""

    required_scopes = {"GET": roles.AUDIT_READ}
    action_filter = TextParam("action")  # not `action`: DRF views use that name

    @extend_schema(
        summary="Audit log",
        parameters=[
            action_filter.openapi("Only entries of this action, e.g. key.created."),
            OpenApiParameter("cursor", str, required=False, description="The `next` or `previous` of a page."),
            AuditPagination().limit.openapi("Entries per page."),
        ],
        responses=OpenApiResponse(OpenApiTypes.OBJECT),
        tags=["governance"],
    )
    def get(self, request):
        entries = AuditEntry.objects.filter(tenant_id=request.user.tenant.id)
        action = self.action_filter.read(request)
        if action:
            entries = entries.filter(action=action)
        paginator = AuditPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(
            [
                {
                    "seq": e.seq,
                    "action": e.action,
                    "actor": e.actor,
                    "target": e.target,
                    "data": e.data,
                    "created_at": e.created_at,
                    "hash": e.hash,
                }
                for e in page
            ]
        )


class KeyInSerializer(serializers.Serializer):
    name = strict.CharField(max_length=100, required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.EXECUTOR)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, allow_null=True)


def key_view(api_key: ApiKey, plaintext: str | None = None) -> dict:
    view = {
        "id": api_key.key_id,
        "display": keys.display(api_key.key_id),
        "name": api_key.name,
        "role": api_key.role,
        "created_at": api_key.created_at,
        "expires_at": api_key.expires_at,
        "revoked_at": api_key.revoked_at,
        "last_used_at": api_key.last_used_at,
    }
    if plaintext:
        view["key"] = plaintext  # shown this once
    return view


class KeysView(APIView):
    """GET/POST /v1/keys: list and create API keys of this tenant."""

    required_scopes = {"GET": roles.KEYS_ADMIN, "POST": roles.KEYS_ADMIN}

    @extend_schema(summary="List API keys", responses=OpenApiResponse(OpenApiTypes.OBJECT), tags=["governance"])
    def get(self, request):
        return Response({"object": "list", "data": [key_view(k) for k in ApiKey.objects.filter(tenant=request.user.tenant)]})

    @extend_schema(
        summary="Create an API key (its secret is shown once)",
        request=KeyInSerializer,
        responses={201: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["governance"],
    )
    def post(self, request):
        data = KeyInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["role"] == Role.ADMIN and request.user.role != Role.ADMIN:
            raise ApiError(403, "Only an admin key may create admin keys.", type="permission_error", code="insufficient_permissions")
        days = data.validated_data.get("expires_in_days")
        api_key, plaintext = ApiKey.issue(
            request.user.tenant,
            role=data.validated_data["role"],
            name=data.validated_data["name"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            actor=audit.actor_for_key(request.user.api_key),
        )
        return Response(key_view(api_key, plaintext), status=status.HTTP_201_CREATED)


def tenant_key(request, key_id) -> ApiKey:
    api_key = ApiKey.objects.filter(tenant=request.user.tenant, key_id=key_id).first()
    if api_key is None:
        raise not_found("API key")
    return api_key


class KeyView(APIView):
    """DELETE /v1/keys/{id}: revoke a key now."""

    required_scopes = {"DELETE": roles.KEYS_ADMIN}

    @extend_schema(summary="Revoke an API key", responses={204: None}, tags=["governance"])
    def delete(self, request, key_id):
        tenant_key(request, key_id).revoke(actor=audit.actor_for_key(request.user.api_key))
        return Response(status=status.HTTP_204_NO_CONTENT)


class KeyRotateView(APIView):
    """POST /v1/keys/{id}/rotate: a new key with the same role; the old one expires after an overlap."""

    required_scopes = {"POST": roles.KEYS_ADMIN}
    overlap_hours = IntegerParam("overlap_hours", 0, 720, default=24)

    @extend_schema(
        summary="Rotate an API key",
        parameters=[overlap_hours.openapi("Hours the old key keeps working.")],
        request=None,
        responses={201: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["governance"],
    )
    def post(self, request, key_id):
        old = tenant_key(request, key_id)
        if not old.is_usable:
            raise ApiError(409, "A revoked or expired key cannot be rotated.", code="key_not_usable")
        overlap = self.overlap_hours.read(request)
        actor = audit.actor_for_key(request.user.api_key)
        with transaction.atomic():
            new, plaintext = ApiKey.issue(old.tenant, role=old.role, name=old.name, expires_at=old.expires_at, actor=actor)
            # The new key spends against the old one's per-key budgets (and their spend so far).
            ApiKey.objects.filter(pk=new.pk).update(budget_key_id=old.budget_key_id or old.id)
            ends = timezone.now() + timedelta(hours=overlap)
            ApiKey.objects.filter(pk=old.pk).update(expires_at=ends if old.expires_at is None else min(ends, old.expires_at))
            config_cache.changed()  # the updates send no signal
            audit.record(
                "key.rotated",
                actor=actor,
                tenant_id=old.tenant_id,
                target=old.key_id,
                data={"new_key": new.key_id, "old_key_expires": ends.isoformat()},
            )
        return Response(key_view(new, plaintext), status=status.HTTP_201_CREATED)
