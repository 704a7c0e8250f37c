"""Custom roles (apps.rbac.CustomRole) are an Enterprise entitlement: `custom_roles` in its limits."""

from django.db import migrations

PLANS_WITH_CUSTOM_ROLES = ["enterprise"]


def grant(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for plan in Plan.objects.filter(code__in=PLANS_WITH_CUSTOM_ROLES):
        plan.limits = {**plan.limits, "custom_roles": True}
        plan.save(update_fields=["limits"])


def revoke(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for plan in Plan.objects.filter(code__in=PLANS_WITH_CUSTOM_ROLES):
        plan.limits = {key: value for key, value in plan.limits.items() if key != "custom_roles"}
        plan.save(update_fields=["limits"])


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_plan_max_map_items")]

    operations = [migrations.RunPython(grant, revoke)]
