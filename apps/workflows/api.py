"""REST API v1: workflows (versioned definitions), their cost preview, runs and run progress."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.filters import UtcIsoDateTimeFilter
from apps.api.idempotency import idempotent
from apps.rbac.permissions import Permission
from apps.work.progress import progress_stream
from apps.workflows.definitions import definition_check, workflow_create, workflow_update
from apps.workflows.models import STEP_STATUS_SHOWN, RunStatus, StepRun, Workflow, WorkflowRun, WorkflowVersion
from apps.workflows.preview import workflow_cost_preview
from apps.workflows.runs import run_cancel, run_rerun, run_start
from apps.workflows.selectors import (
    definition_of,
    run_get,
    run_list,
    run_steps,
    workflow_get,
    workflow_latest_version,
    workflow_list,
    workflow_versions,
)

# How long one events stream stays open; clients reconnect to follow a longer run.


def _ms(start: Any, end: Any) -> int | None:
    return int((end - start).total_seconds() * 1000) if start and end else None


# -- workflows ----------------------------------------------------------------------------------------


class WorkflowInput(serializers.Serializer[Any]):
    name = serializers.RegexField(r"^[\w .:-]{1,100}$", help_text="Unique in the organization.")
    definition = serializers.JSONField(help_text="The definition: a JSON object, or YAML text.")


class WorkflowChange(serializers.Serializer[Any]):
    name = serializers.RegexField(r"^[\w .:-]{1,100}$", required=False)
    definition = serializers.JSONField(required=False, help_text="A new version: a JSON object, or YAML text.")


class VersionOutput(serializers.ModelSerializer[WorkflowVersion]):
    version = serializers.IntegerField(source="number")
    created_by = serializers.CharField(source="created_by_label")

    class Meta:
        model = WorkflowVersion
        fields = ("version", "definition", "created_at", "created_by")


def _workflow_data(workflow: Workflow, version: WorkflowVersion | None = None) -> dict[str, Any]:
    version = version or workflow_latest_version(workflow=workflow)
    return {
        "id": str(workflow.pk),
        "name": workflow.name,
        "created_at": workflow.created_at,
        "created_by": workflow.created_by_label,
        "version": version.number,
        "definition": version.definition,
        "updated_at": version.created_at,
    }


class WorkflowOutput(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    version = serializers.IntegerField(help_text="The latest version's number.")
    definition = serializers.JSONField(help_text="The latest version's definition.")
    updated_at = serializers.DateTimeField(help_text="When the latest version was saved.")

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return super().to_representation(_workflow_data(instance))


class WorkflowFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Workflow
        fields = ("name",)


class WorkflowListCreateApi(ListAPIView[Workflow]):
    required_permissions = {"GET": Permission.WORKFLOWS_READ, "POST": Permission.WORKFLOWS_WRITE}
    serializer_class = WorkflowOutput
    filterset_class = WorkflowFilter

    def get_queryset(self) -> QuerySet[Workflow]:
        return workflow_list()

    @extend_schema(request=WorkflowInput, responses={201: WorkflowOutput}, summary="Create a workflow")
    @idempotent
    def post(self, request: Request) -> Response:
        data = WorkflowInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = workflow_create(
            organization=request_organization(request),
            actor=request_principal(request),
            name=data.validated_data["name"],
            definition=data.validated_data["definition"],
        )
        workflow = version.workflow
        return Response(
            WorkflowOutput(workflow).data, status=201, headers={"Location": f"/api/v1/workflows/{workflow.pk}"}
        )


class WorkflowDetailApi(APIView):
    required_permissions = {
        "GET": Permission.WORKFLOWS_READ,
        "PUT": Permission.WORKFLOWS_WRITE,
        "PATCH": Permission.WORKFLOWS_WRITE,
    }

    @extend_schema(responses=WorkflowOutput, summary="A workflow, with its latest version")
    def get(self, request: Request, workflow_id: UUID) -> Response:
        return Response(WorkflowOutput(workflow_get(workflow_id=workflow_id)).data)

    def _change(self, request: Request, workflow_id: UUID, *, full: bool) -> Response:
        workflow = workflow_get(workflow_id=workflow_id)
        data = WorkflowChange(data=request.data)
        data.is_valid(raise_exception=True)
        if full and "definition" not in data.validated_data:
            raise ValidationError({"definition": ["PUT replaces the definition: give one (PATCH to rename only)"]})
        workflow_update(
            organization=request_organization(request),
            actor=request_principal(request),
            workflow=workflow,
            name=data.validated_data.get("name"),
            definition=data.validated_data.get("definition"),
        )
        workflow.refresh_from_db()
        return Response(WorkflowOutput(workflow).data)

    @extend_schema(request=WorkflowChange, responses=WorkflowOutput, summary="Save a new version of the definition")
    def put(self, request: Request, workflow_id: UUID) -> Response:
        return self._change(request, workflow_id, full=True)

    @extend_schema(
        request=WorkflowChange, responses=WorkflowOutput, summary="Rename, and/or save a new version of the definition"
    )
    def patch(self, request: Request, workflow_id: UUID) -> Response:
        return self._change(request, workflow_id, full=False)


class WorkflowVersionsApi(ListAPIView[WorkflowVersion]):
    required_permissions = {"GET": Permission.WORKFLOWS_READ}
    serializer_class = VersionOutput

    def get_queryset(self) -> QuerySet[WorkflowVersion]:
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema's introspection
            return WorkflowVersion.objects.none()
        return workflow_versions(workflow=workflow_get(workflow_id=self.kwargs["workflow_id"]))


class PreviewInput(serializers.Serializer[Any]):
    input = serializers.DictField(required=False, help_text="The run's input, if known: sizes prompts better.")
    version = serializers.IntegerField(required=False, min_value=1)
    definition = serializers.JSONField(required=False, help_text="Preview this definition instead of a saved one.")


def _version(workflow: Workflow, number: int | None) -> WorkflowVersion:
    if number is None:
        return workflow_latest_version(workflow=workflow)
    version = workflow_versions(workflow=workflow).filter(number=number).first()
    if version is None:
        raise ApiError(404, "version_not_found", f"this workflow has no version {number}", param="version")
    return version


class WorkflowPreviewApi(APIView):
    required_permissions = {"POST": Permission.WORKFLOWS_READ}

    @extend_schema(
        request=PreviewInput,
        responses={200: OpenApiResponse(description="expected and worst-case cost per step, and the budgets")},
        summary="What a run would cost",
    )
    def post(self, request: Request, workflow_id: UUID) -> Response:
        workflow = workflow_get(workflow_id=workflow_id)
        data = PreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        if "definition" in data.validated_data:
            _, definition = definition_check(raw=data.validated_data["definition"])
        else:
            definition = definition_of(version=_version(workflow, data.validated_data.get("version")))
        preview = workflow_cost_preview(
            principal=request_principal(request),
            definition=definition,
            data=data.validated_data.get("input"),
            organization=request_organization(request),
        )
        return Response(preview)


# -- runs ---------------------------------------------------------------------------------------------


class RunInput(serializers.Serializer[Any]):
    input = serializers.JSONField(required=False, help_text="The values `{{ input.x }}` refers to (an object).")
    version = serializers.IntegerField(required=False, min_value=1, help_text="Default: the latest version.")


def _step_data(step: StepRun, types: dict[str, str]) -> dict[str, Any]:
    return {
        "name": step.name,
        "type": types.get(step.name),
        "status": STEP_STATUS_SHOWN.get(step.status, step.status),
        "output": step.output,
        "cost_usd": str(step.cost_usd),
        "tokens": {"input": step.input_tokens, "output": step.output_tokens},
        "model": step.model or None,
        "cache": step.cache_layer or None,
        "attempts": step.attempts,
        "reused": step.reused,
        "items_done": len(step.items) if types.get(step.name) == "map" else None,
        "error": {"class": step.error_class, "message": step.error_message} if step.error_class else None,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "duration_ms": _ms(step.started_at, step.finished_at),
    }


def _run_data(run: WorkflowRun, *, steps: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(run.pk),
        "workflow": {"id": str(run.workflow_id), "name": run.workflow.name},
        "version": run.version.number,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "cost_usd": str(run.cost_usd),
        "error": {"class": run.error_class, "message": run.error_message} if run.error_class else None,
        "rerun_of": str(run.rerun_of_id) if run.rerun_of_id else None,
        "created_by": run.principal_label,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "content_deleted_at": run.content_deleted_at,
        "timings": {"queued_ms": _ms(run.created_at, run.started_at), "run_ms": _ms(run.started_at, run.finished_at)},
    }
    if steps:
        types = {step.name: step.type for step in definition_of(version=run.version).steps}
        data["steps"] = [_step_data(step, types) for step in run_steps(run=run)]
    return data


class RunOutput(serializers.Serializer[WorkflowRun]):
    """A run: its status, per-step status, output, tokens, cost and timings, and the run's output."""

    def to_representation(self, instance: WorkflowRun) -> dict[str, Any]:
        return _run_data(instance, steps=bool(self.context.get("steps", True)))


class WorkflowRunsApi(APIView):
    required_permissions = {"POST": Permission.WORKFLOWS_WRITE}

    @extend_schema(request=RunInput, responses={202: RunOutput}, summary="Start a run")
    # The run's input is content: not kept with the key (a replay answers with it null).
    @idempotent(redact=("input", "output"))
    def post(self, request: Request, workflow_id: UUID) -> Response:
        workflow = workflow_get(workflow_id=workflow_id)
        data = RunInput(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_start(
            organization=request_organization(request),
            principal=request_principal(request),
            workflow=workflow,
            input=data.validated_data.get("input", {}),
            version=_version(workflow, data.validated_data.get("version")),
        )
        return Response(RunOutput(run).data, status=202, headers={"Location": f"/api/v1/runs/{run.pk}"})


class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices)
    workflow = django_filters.UUIDFilter(field_name="workflow_id")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = WorkflowRun
        fields = ("status", "workflow")


class RunListApi(ListAPIView[WorkflowRun]):
    required_permissions = {"GET": Permission.WORKFLOWS_READ}
    serializer_class = RunOutput
    filterset_class = RunFilter

    def get_queryset(self) -> QuerySet[WorkflowRun]:
        return run_list()

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "steps": False}


class RunDetailApi(APIView):
    required_permissions = {"GET": Permission.WORKFLOWS_READ}

    @extend_schema(responses=RunOutput, summary="A run: status, steps and, once done, its output")
    def get(self, request: Request, run_id: UUID) -> Response:
        return Response(RunOutput(run_get(run_id=run_id)).data)


class RunCancelApi(APIView):
    required_permissions = {"POST": Permission.WORKFLOWS_WRITE}

    @extend_schema(
        request=None,
        responses={200: RunOutput, 409: OpenApiResponse(description="the run already finished")},
        summary="Cancel a run",
    )
    def post(self, request: Request, run_id: UUID) -> Response:
        run = run_cancel(
            organization=request_organization(request), actor=request_principal(request), run=run_get(run_id=run_id)
        )
        return Response(RunOutput(run).data)


class RunRerunApi(APIView):
    required_permissions = {"POST": Permission.WORKFLOWS_WRITE}

    @extend_schema(
        request=None,
        responses={202: RunOutput, 409: OpenApiResponse(description="the run has no failed step")},
        summary="Run again from the failed step (a new run; earlier outputs kept)",
    )
    @idempotent(redact=("input", "output"))
    def post(self, request: Request, run_id: UUID) -> Response:
        rerun = run_rerun(
            organization=request_organization(request), actor=request_principal(request), run=run_get(run_id=run_id)
        )
        return Response(RunOutput(rerun).data, status=202, headers={"Location": f"/api/v1/runs/{rerun.pk}"})


class RunEventsApi(APIView):
    required_permissions = {"GET": Permission.WORKFLOWS_READ}

    @extend_schema(
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                description="`step` events when a step changes, `run` events when the run does, until it ends"
            )
        },
        summary="Follow a run's progress (server-sent events)",
    )
    def get(self, request: Request, run_id: UUID) -> StreamingHttpResponse:
        run_id = run_get(run_id=run_id).pk

        def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
            run = WorkflowRun.objects.select_related("workflow", "version").filter(pk=run_id).first()
            if run is None:
                return None
            data = _run_data(run, steps=True)
            steps = [(f"step:{step['name']}", "step", step) for step in data["steps"]]
            summary = {key: value for key, value in data.items() if key != "steps"}
            return [*steps, ("run", "run", summary)], run.is_finished

        return progress_stream(
            organization=request_organization(request), topic="workflow_run", object_id=run_id, poll=poll
        )
