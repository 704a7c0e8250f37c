"""Fair scheduling of runs: each organization has at most its plan's cap of runs in flight."""

from __future__ import annotations

from apps.billing.selectors import plan_limit
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.workflows.models import WorkflowRun
from apps.workflows.runs import run_cancel, run_start
from tests.factories import TEST_ACTOR
from tests.workflows.factories import KEY, dispatched, workflow_make


def test_runs_beyond_the_plans_cap_wait_and_start_in_order_as_others_end(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a, organization_b = two_tenants
    cap = plan_limit(organization_a, "concurrent_runs")
    with organization_schema(organization_a):
        workflow = workflow_make(organization_a)
        runs = [
            run_start(organization=organization_a, principal=KEY, workflow=workflow, input={"text": f"t{n}"})
            for n in range(cap + 2)
        ]
        started = [run for run in runs if dispatched(run)]
        assert started == runs[:cap]
        assert WorkflowRun.objects.filter(admitted_at__isnull=True).count() == 2
    with organization_schema(organization_b):
        other = run_start(
            organization=organization_b, principal=KEY, workflow=workflow_make(organization_b), input={"text": "b"}
        )
        assert dispatched(other), "another organization's flood must not hold this run back"
    with organization_schema(organization_a):
        run_cancel(organization=organization_a, actor=TEST_ACTOR, run=runs[0])
        assert dispatched(runs[cap]) and not dispatched(runs[cap + 1])
