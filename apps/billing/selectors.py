from apps.billing.models import Plan


class UnknownPlan(LookupError):
    pass


def plan_get(*, code: str) -> Plan:
    try:
        return Plan.objects.get(code=code)
    except Plan.DoesNotExist as exc:
        known = ", ".join(Plan.objects.order_by("id").values_list("code", flat=True))
        raise UnknownPlan(f"unknown plan {code!r} (known: {known})") from exc
