"""REST API v1: jobs (agents: apps.agents.api)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents.models import POLICIES, Agent
from apps.agents.selectors import agent_find
from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.filters import UtcIsoDateTimeFilter
from apps.api.idempotency import idempotent
from apps.api.serializers import FieldsBuiltOnce
from apps.jobs.models import Job, JobStatus
from apps.jobs.selectors import job_get
from apps.jobs.services import JobFinished, job_cancel, job_submit
from apps.rbac.permissions import Permission
from apps.work.progress import progress_stream

_PASSED_THROUGH = ("tools", "tool_choice", "response_format", "seed", "stop", "top_p", "cache", "min_quality")


class JobInput(FieldsBuiltOnce, serializers.Serializer[Any]):
    messages = serializers.ListField(child=serializers.DictField(), required=False, min_length=1)
    prompt = serializers.CharField(required=False, trim_whitespace=False)
    model = serializers.CharField(required=False, max_length=100)
    policy = serializers.ChoiceField(choices=POLICIES, required=False)
    agent = serializers.CharField(required=False, help_text="An agent's id or name: its defaults apply.")
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    max_cost_usd = serializers.DecimalField(required=False, max_digits=12, decimal_places=6, min_value=0)
    webhook_endpoint_id = serializers.UUIDField(required=False)
    min_quality = serializers.IntegerField(required=False, min_value=1, max_value=5)
    tools = serializers.JSONField(required=False)
    tool_choice = serializers.JSONField(required=False)
    response_format = serializers.JSONField(required=False)
    seed = serializers.IntegerField(required=False)
    stop = serializers.JSONField(required=False)
    top_p = serializers.FloatField(required=False, min_value=0, max_value=1)
    cache = serializers.JSONField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("messages" in attrs) == ("prompt" in attrs):
            raise serializers.ValidationError({"messages": "give `messages` or `prompt` (one of them)"})
        if "model" in attrs and "policy" in attrs:
            raise serializers.ValidationError({"policy": "give `model` or `policy`, not both"})
        if not {"model", "policy", "agent"} & attrs.keys():
            raise serializers.ValidationError({"model": "give a `model`, a routing `policy` or an `agent`"})
        return attrs


class JobOutput(FieldsBuiltOnce, serializers.ModelSerializer[Job]):
    agent = serializers.UUIDField(source="agent_id", allow_null=True)
    model = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=8)
    # How many times a worker started the job (the runtime's `attempts`).
    runs = serializers.IntegerField(source="attempts")

    class Meta:
        model = Job
        fields = (
            "id",
            "status",
            "model",
            "agent",
            "result",
            "cost_usd",
            "error",
            "runs",
            "created_at",
            "started_at",
            "finished_at",
            "timings",
            "webhook_endpoint_id",
        )

    def get_model(self, job: Job) -> str | None:
        if job.result and job.result.get("model"):
            return str(job.result["model"])
        requested = job.request.get("model") or job.request.get("policy")
        return str(requested) if requested else None

    def get_timings(self, job: Job) -> dict[str, int | None]:
        def ms(start: Any, end: Any) -> int | None:
            return int((end - start).total_seconds() * 1000) if start and end else None

        return {"queued_ms": ms(job.created_at, job.started_at), "run_ms": ms(job.started_at, job.finished_at)}

    def get_error(self, job: Job) -> dict[str, str] | None:
        return {"class": job.error_class, "message": job.error_message} if job.error_class else None


def _agent_for(reference: str) -> Agent:
    agent = agent_find(reference=reference)
    if agent is None:
        raise ApiError(400, "agent_not_found", f"no agent {reference!r} in this organization", param="agent")
    return agent


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=JobStatus.choices)
    agent = django_filters.UUIDFilter(field_name="agent_id")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ("status", "agent")


class JobListCreateApi(ListAPIView[Job]):
    required_permissions = {"GET": Permission.JOBS_READ, "POST": Permission.JOBS_WRITE}
    serializer_class = JobOutput
    filterset_class = JobFilter

    def get_queryset(self) -> QuerySet[Job]:
        return Job.objects.all()

    @extend_schema(request=JobInput, responses={202: JobOutput}, summary="Submit a job")
    @idempotent
    def post(self, request: Request) -> Response:
        data = JobInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        agent = _agent_for(fields.pop("agent")) if "agent" in fields else None
        webhook_endpoint_id = fields.pop("webhook_endpoint_id", None)
        job = job_submit(  # an LlmRefusal (unknown model, bad field) is rendered by apps.api.errors
            organization=request_organization(request),
            principal=request_principal(request),
            request=fields,
            agent=agent,
            webhook_endpoint_id=webhook_endpoint_id,
        )
        return Response(JobOutput(job).data, status=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


class JobDetailApi(APIView):
    required_permissions = {"GET": Permission.JOBS_READ}

    @extend_schema(responses=JobOutput, summary="A job: status, and once done its result")
    def get(self, request: Request, job_id: UUID) -> Response:
        return Response(JobOutput(job_get(job_id=job_id)).data)


class JobCancelApi(APIView):
    required_permissions = {"POST": Permission.JOBS_WRITE}

    @extend_schema(
        request=None,
        responses={200: JobOutput, 409: OpenApiResponse(description="the job already finished")},
        summary="Cancel a job",
    )
    def post(self, request: Request, job_id: UUID) -> Response:
        job = job_get(job_id=job_id)
        try:
            job = job_cancel(organization=request_organization(request), actor=request_principal(request), job=job)
        except JobFinished as finished:
            raise ApiError(409, "job_finished", f"the job already ended ({finished}); nothing to cancel") from finished
        return Response(JobOutput(job).data)


class JobEventsApi(APIView):
    required_permissions = {"GET": Permission.JOBS_READ}

    @extend_schema(
        responses={(200, "text/event-stream"): OpenApiResponse(description="`status` events until the job ends")},
        summary="Follow a job's progress (server-sent events)",
    )
    def get(self, request: Request, job_id: UUID) -> StreamingHttpResponse:
        job_id = job_get(job_id=job_id).pk

        def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
            job = Job.objects.filter(pk=job_id).first()
            return None if job is None else ([("job", "status", JobOutput(job).data)], job.is_finished)

        return progress_stream(organization=request_organization(request), topic="job", object_id=job_id, poll=poll)
