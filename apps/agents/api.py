"""REST API v1: agents (permissions are the jobs' ones, which jobs and agents have always shared)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents.models import POLICIES, Agent
from apps.agents.selectors import agent_get
from apps.agents.services import AgentFields, agent_create, agent_delete, agent_update
from apps.api.authentication import request_organization, request_principal
from apps.api.idempotency import idempotent
from apps.knowledge.models import KnowledgeBase
from apps.knowledge.search import MAX_TOP_K
from apps.rbac.permissions import Permission

# Each question of an agent's job searches each of its knowledge bases (one embedding call each).
MAX_AGENT_KNOWLEDGE_BASES = 5


class AgentSerializer(serializers.ModelSerializer[Agent]):
    # allow_blank: a form posting an empty policy (switching to a model) sends "", not nothing.
    policy = serializers.ChoiceField(choices=("", *POLICIES), required=False, allow_blank=True)
    # Knowledge bases of the organization (the queryset is evaluated in the request's schema: another
    # organization's id is "does not exist").
    knowledge_base_ids = serializers.PrimaryKeyRelatedField(
        many=True,
        source="knowledge_bases",
        queryset=KnowledgeBase.objects.all(),
        pk_field=serializers.UUIDField(),
        required=False,
        help_text=f"Knowledge bases searched with each question (at most {MAX_AGENT_KNOWLEDGE_BASES}).",
    )

    class Meta:
        model = Agent
        fields = (
            "id",
            "name",
            "description",
            "system_prompt",
            "model",
            "policy",
            "min_quality",
            "temperature",
            "max_tokens",
            "knowledge_base_ids",
            "retrieval_top_k",
            "max_cost_usd",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")
        # The ranges of the table's check constraints: refused here as a 400, not there as a 500.
        extra_kwargs = {
            "temperature": {"min_value": 0, "max_value": 2},
            "min_quality": {"min_value": 1, "max_value": 5},
            "retrieval_top_k": {"min_value": 1, "max_value": MAX_TOP_K},
        }

    def validate_knowledge_base_ids(self, value: list[KnowledgeBase]) -> list[KnowledgeBase]:
        if len(value) > MAX_AGENT_KNOWLEDGE_BASES:
            raise serializers.ValidationError(f"at most {MAX_AGENT_KNOWLEDGE_BASES} knowledge bases")
        return list(dict.fromkeys(value))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        model = attrs.get("model", instance.model if isinstance(instance, Agent) else "")
        policy = attrs.get("policy", instance.policy if isinstance(instance, Agent) else "")
        if bool(model) == bool(policy):
            raise serializers.ValidationError({"model": "give an agent a `model` or a routing `policy` (one of them)"})
        name = attrs.get("name")
        others = Agent.objects.exclude(pk=instance.pk) if isinstance(instance, Agent) else Agent.objects.all()
        if name and others.filter(name=name).exists():
            raise serializers.ValidationError({"name": f"an agent named {name!r} already exists"})
        return attrs


class AgentListCreateApi(ListAPIView[Agent]):
    required_permissions = {"GET": Permission.JOBS_READ, "POST": Permission.JOBS_WRITE}
    serializer_class = AgentSerializer

    def get_queryset(self) -> QuerySet[Agent]:
        return Agent.objects.prefetch_related("knowledge_bases")

    @extend_schema(request=AgentSerializer, responses={201: AgentSerializer}, summary="Create an agent")
    @idempotent
    def post(self, request: Request) -> Response:
        data = AgentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields["knowledge_bases"] = tuple(fields.get("knowledge_bases", ()))
        agent = agent_create(
            organization=request_organization(request), actor=request_principal(request), fields=AgentFields(**fields)
        )
        return Response(AgentSerializer(agent).data, status=201)


class AgentDetailApi(APIView):
    required_permissions = {
        "GET": Permission.JOBS_READ,
        "PATCH": Permission.JOBS_WRITE,
        "DELETE": Permission.JOBS_WRITE,
    }

    @extend_schema(responses=AgentSerializer)
    def get(self, request: Request, agent_id: UUID) -> Response:
        return Response(AgentSerializer(agent_get(agent_id=agent_id)).data)

    @extend_schema(request=AgentSerializer, responses=AgentSerializer)
    def patch(self, request: Request, agent_id: UUID) -> Response:
        agent = agent_get(agent_id=agent_id)
        data = AgentSerializer(agent, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        agent = agent_update(
            organization=request_organization(request),
            actor=request_principal(request),
            agent=agent,
            changes=dict(data.validated_data),
        )
        return Response(AgentSerializer(agent).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, agent_id: UUID) -> Response:
        agent_delete(
            organization=request_organization(request),
            actor=request_principal(request),
            agent=agent_get(agent_id=agent_id),
        )
        return Response(status=204)
