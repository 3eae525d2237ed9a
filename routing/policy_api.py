"""/v1/agents/{name}/routing-policy and /v1/agents/{name}/cache: an agent's shared-stream and cache
policy, its cache's hit counts, and purging what the cache keeps for it. Another tenant's agent is a 404."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from budgets import audit, roles
from routing import cache, dedup
from routing.models import Policy
from routing.serializers import PolicySerializer
from sentinel_site.errors import not_found

TAG = ["routing"]


def _agent(request, name: str) -> Agent:
    agent = Agent.objects.live().filter(tenant=request.user.tenant, name=name).first()
    if agent is None:
        raise not_found("agent")
    return agent


def _body(agent: Agent, policy: Policy) -> dict:
    return {
        **PolicySerializer(policy).data,
        "agent": agent.name,
        "cache_stats": cache.stats(agent.id),
        "dedup_saved_calls": dedup.saved(agent.id),
    }


class PolicyView(APIView):
    """An agent's routing policy (no row yet: the defaults, which routing.policy.NONE applies)."""

    required_scopes = {"GET": roles.AGENTS_READ, "PUT": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="agents_routing_policy_retrieve",
        summary="Read an agent's routing policy",
        responses=OpenApiResponse(OpenApiTypes.OBJECT),
        tags=TAG,
    )
    def get(self, request, name: str):
        agent = _agent(request, name)
        policy = Policy.objects.filter(agent=agent).first() or Policy(agent=agent)
        return Response(_body(agent, policy))

    @extend_schema(
        operation_id="agents_routing_policy_update",
        summary="Set an agent's routing policy",
        description="Only the fields sent change.",
        request=PolicySerializer,
        responses=OpenApiResponse(OpenApiTypes.OBJECT),
        tags=TAG,
    )
    def put(self, request, name: str):
        agent = _agent(request, name)
        policy = Policy.objects.filter(agent=agent).first() or Policy(agent=agent)
        serializer = PolicySerializer(policy, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            policy = serializer.save(agent=agent)
            audit.record(
                "routing_policy.updated",
                actor=audit.actor_for_key(request.user.api_key),
                tenant_id=agent.tenant_id,
                target=str(agent.id),
                data={"agent": agent.name, "fields": sorted(serializer.validated_data)},
            )
        return Response(_body(agent, policy))


class CacheView(APIView):
    """What the response cache keeps for an agent."""

    required_scopes = {"DELETE": roles.AGENTS_WRITE}

    @extend_schema(
        operation_id="agents_cache_purge",
        summary="Purge an agent's response cache",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="`purged`: how many answers were dropped."), 404: None},
        tags=TAG,
    )
    def delete(self, request, name: str):
        agent = _agent(request, name)
        purged = cache.purge(agent.tenant_id, agent.id)
        audit.record(
            "routing_cache.purged",
            actor=audit.actor_for_key(request.user.api_key),
            tenant_id=agent.tenant_id,
            target=str(agent.id),
            data={"agent": agent.name, "purged": purged},
        )
        return Response({"agent": agent.name, "purged": purged})
