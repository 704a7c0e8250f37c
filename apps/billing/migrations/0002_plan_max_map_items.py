"""Plans limit how many items one workflow map step may run (`max_map_items`)."""

from django.db import migrations

MAX_MAP_ITEMS = {"free": 100, "pro": 1000, "enterprise": 10000}


def set_limit(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for plan in Plan.objects.filter(code__in=MAX_MAP_ITEMS):
        plan.limits = {**plan.limits, "max_map_items": MAX_MAP_ITEMS[plan.code]}
        plan.save(update_fields=["limits"])


def unset_limit(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for plan in Plan.objects.filter(code__in=MAX_MAP_ITEMS):
        plan.limits = {key: value for key, value in plan.limits.items() if key != "max_map_items"}
        plan.save(update_fields=["limits"])


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(set_limit, unset_limit)]
