from apps.billing.entitlements import (
    AppliedPlan,
    Entitlement,
    EntitlementRefused,
    UnknownEntitlement,
    applied_plan,
    applied_plan_compute,
    entitlement,
    entitlement_cache_forget,
    entitlement_require,
    plan_limit,
)
from apps.billing.models import OrganizationPlanPeriod, Plan, PlanVersion
from apps.tenants.models import Organization

__all__ = [
    "AppliedPlan",
    "Entitlement",
    "EntitlementRefused",
    "UnknownEntitlement",
    "UnknownPlan",
    "applied_plan",
    "applied_plan_compute",
    "entitlement",
    "entitlement_cache_forget",
    "entitlement_require",
    "plan_get",
    "plan_limit",
    "plan_periods",
]


class UnknownPlan(LookupError):
    pass


def plan_get(*, code: str) -> Plan:
    try:
        return Plan.objects.get(code=code)
    except Plan.DoesNotExist as exc:
        known = ", ".join(Plan.objects.order_by("id").values_list("code", flat=True))
        raise UnknownPlan(f"unknown plan {code!r} (known: {known})") from exc


def plan_periods(*, organization: Organization, start: object, end: object) -> list[OrganizationPlanPeriod]:
    """The plan periods overlapping [start, end): which versions applied in an invoice period."""
    return list(
        OrganizationPlanPeriod.objects.select_related("plan_version__plan")
        .filter(organization=organization, starts_at__lt=end)
        .exclude(ends_at__lte=start)
        .order_by("starts_at")
    )


def plan_version_current(*, plan: Plan) -> PlanVersion | None:
    return plan.current_version()
