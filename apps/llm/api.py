"""REST API v1: the organization's budgets (the same as `cognitionos budget set`)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.idempotency import idempotent
from apps.llm.models import Budget, BudgetPeriod, BudgetScope
from apps.llm.selectors import BudgetStatus, budget_statuses
from apps.llm.services import BudgetInvalid, budget_delete, budget_set
from apps.rbac.permissions import Permission


class BudgetInput(serializers.Serializer[Any]):
    scope = serializers.ChoiceField(choices=BudgetScope.values)
    scope_id = serializers.CharField(required=False, allow_blank=True, max_length=64, default="")
    period = serializers.ChoiceField(choices=BudgetPeriod.values)
    limit_usd = serializers.DecimalField(max_digits=14, decimal_places=6, min_value=0)
    soft_percent = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)
    hard = serializers.BooleanField(required=False, default=True)


class BudgetOutput(serializers.Serializer[BudgetStatus]):
    id = serializers.IntegerField(source="budget.pk")
    scope = serializers.CharField(source="budget.scope")
    scope_id = serializers.CharField(source="budget.scope_id")
    period = serializers.CharField(source="budget.period")
    limit_usd = serializers.DecimalField(source="budget.limit_usd", max_digits=14, decimal_places=6)
    soft_percent = serializers.IntegerField(source="budget.soft_percent", allow_null=True)
    hard = serializers.BooleanField(source="budget.hard")
    period_start = serializers.DateField()
    spent_usd = serializers.DecimalField(max_digits=16, decimal_places=8)
    reserved_usd = serializers.DecimalField(max_digits=16, decimal_places=8)
    remaining_usd = serializers.DecimalField(max_digits=16, decimal_places=8)


def _status(budget: Budget) -> BudgetStatus:
    return next(status for status in budget_statuses() if status.budget.pk == budget.pk)


class BudgetListOutput(serializers.Serializer[Any]):
    results = BudgetOutput(many=True)


class BudgetListSetApi(APIView):
    required_permissions = {"GET": Permission.BUDGETS_READ, "POST": Permission.BUDGETS_MANAGE}

    @extend_schema(
        operation_id="budgets_list", responses=BudgetListOutput, summary="Budgets, with the current period's spend"
    )
    def get(self, request: Request) -> Response:
        return Response({"results": BudgetOutput(budget_statuses(), many=True).data})  # type: ignore[arg-type]

    @extend_schema(request=BudgetInput, responses={201: BudgetOutput}, summary="Set a budget (create or change)")
    @idempotent
    def post(self, request: Request) -> Response:
        data = BudgetInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            budget = budget_set(
                organization=request_organization(request), actor=request_principal(request), **data.validated_data
            )
        except BudgetInvalid as invalid:
            raise ApiError(400, "invalid_budget", str(invalid)) from invalid
        return Response(BudgetOutput(_status(budget)).data, status=201)


class BudgetDetailApi(APIView):
    required_permissions = {"GET": Permission.BUDGETS_READ, "DELETE": Permission.BUDGETS_MANAGE}

    @extend_schema(responses=BudgetOutput)
    def get(self, request: Request, budget_id: int) -> Response:
        budget = Budget.objects.filter(pk=budget_id).first()
        if budget is None:
            raise ApiError(404, "not_found", "no such budget in this organization")
        return Response(BudgetOutput(_status(budget)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, budget_id: int) -> Response:
        budget = Budget.objects.filter(pk=budget_id).first()
        if budget is None:
            raise ApiError(404, "not_found", "no such budget in this organization")
        budget_delete(organization=request_organization(request), budget=budget, actor=request_principal(request))
        return Response(status=204)
