"""Plans in typed columns: versions (immutable once used), an organization's plan periods and its
subscription state. Free, Pro and Enterprise get their first version; any other plan gets one from
its old limits; every organization starts an open period on its plan's version, so nobody changes
plan. The JSON `limits` column goes."""

import django.db.models.deletion
from decimal import Decimal

from django.db import migrations, models
from django.utils import timezone

SEEDED = {
    "free": {
        "position": 0, "base_price_usd": Decimal("0"), "included_usage_usd": Decimal("5.00"),
        "overage_allowed": False, "overage_price_per_usd": None, "max_members": 3, "max_api_keys": 5,
        "requests_per_minute": 60, "tokens_per_minute": 100_000, "max_concurrent_jobs": 2,
        "max_concurrent_runs": 2, "max_map_items": 100, "min_retention_days": 0, "max_retention_days": 30,
        "sso": False, "custom_roles": False, "byok": False, "semantic_cache": False, "audit_export": False,
        "webhooks": False, "past_due_grace_days": 0,
    },
    "pro": {
        "position": 1, "base_price_usd": Decimal("49.00"), "included_usage_usd": Decimal("50.00"),
        "overage_allowed": True, "overage_price_per_usd": Decimal("1.0000"), "max_members": 25, "max_api_keys": 100,
        "requests_per_minute": 600, "tokens_per_minute": 2_000_000, "max_concurrent_jobs": 20,
        "max_concurrent_runs": 20, "max_map_items": 1000, "min_retention_days": 0, "max_retention_days": 90,
        "sso": False, "custom_roles": False, "byok": True, "semantic_cache": True, "audit_export": True,
        "webhooks": True, "past_due_grace_days": 7,
    },
    "enterprise": {
        "position": 2, "base_price_usd": Decimal("499.00"), "included_usage_usd": Decimal("500.00"),
        "overage_allowed": True, "overage_price_per_usd": Decimal("0.9000"), "max_members": 1000, "max_api_keys": None,
        "requests_per_minute": 6000, "tokens_per_minute": 20_000_000, "max_concurrent_jobs": 200,
        "max_concurrent_runs": 200, "max_map_items": 10_000, "min_retention_days": 0, "max_retention_days": 3650,
        "sso": True, "custom_roles": True, "byok": True, "semantic_cache": True, "audit_export": True,
        "webhooks": True, "past_due_grace_days": 14,
    },
}


def _from_limits(limits):
    """A version for a plan this migration doesn't know, from its old JSON limits (old defaults
    where it said nothing; features it didn't have stay off)."""
    overage = Decimal(str(limits.get("monthly_budget_usd", "10.00")))
    return {
        "base_price_usd": Decimal("0"), "included_usage_usd": overage, "overage_allowed": False,
        "overage_price_per_usd": None, "max_members": int(limits.get("max_members", 5)), "max_api_keys": None,
        "requests_per_minute": int(limits.get("requests_per_minute", 60)),
        "tokens_per_minute": int(limits.get("tokens_per_minute", 100_000)),
        "max_concurrent_jobs": int(limits.get("max_concurrent_jobs", 2)),
        "max_concurrent_runs": int(limits.get("max_concurrent_jobs", 2)),
        "max_map_items": int(limits.get("max_map_items", 100)), "min_retention_days": 0, "max_retention_days": 3650,
        "sso": bool(limits.get("sso", False)), "custom_roles": bool(limits.get("custom_roles", False)),
        "byok": True, "semantic_cache": bool(limits.get("semantic_cache", False)), "audit_export": True,
        "webhooks": True, "past_due_grace_days": 7,
    }


def seed(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    PlanVersion = apps.get_model("billing", "PlanVersion")
    Period = apps.get_model("billing", "OrganizationPlanPeriod")
    Subscription = apps.get_model("billing", "OrganizationSubscription")
    Organization = apps.get_model("tenants", "Organization")
    now = timezone.now()
    for code, name in (("free", "Free"), ("pro", "Pro"), ("enterprise", "Enterprise")):
        Plan.objects.get_or_create(code=code, defaults={"name": name, "limits": {}})
    versions = {}
    for plan in Plan.objects.all():
        values = dict(SEEDED.get(plan.code) or _from_limits(plan.limits or {}))
        plan.position = values.pop("position", 10)
        plan.public = plan.code in SEEDED
        plan.save(update_fields=["position", "public"])
        versions[plan.pk] = PlanVersion.objects.create(plan=plan, number=1, **values)
    for organization in Organization.objects.all():
        version = versions[organization.plan_id]
        Period.objects.create(
            organization=organization, plan_version=version, starts_at=organization.created_at or now,
            reason="migration",
        )
        if version.first_used_at is None:
            version.first_used_at = now
            version.save(update_fields=["first_used_at"])
        Subscription.objects.get_or_create(organization=organization)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_plan_custom_roles"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(name="plan", options={"ordering": ("position", "id")}),
        migrations.AddField(model_name="plan", name="public", field=models.BooleanField(default=True)),
        migrations.AddField(
            model_name="plan",
            name="position",
            field=models.PositiveSmallIntegerField(default=0, help_text="Order on the plan page."),
        ),
        migrations.CreateModel(
            name="PlanVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField(help_text="1, 2, ... per plan; set on save when empty.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("first_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("base_price_usd", models.DecimalField(decimal_places=2, default=Decimal("0"), help_text="Monthly price of the subscription.", max_digits=10)),
                ("included_usage_usd", models.DecimalField(decimal_places=2, help_text="Usage per invoice period included in the price (list price).", max_digits=12)),
                ("overage_allowed", models.BooleanField(default=False, help_text="Past the included usage calls continue and are billed; otherwise they stop.")),
                ("overage_price_per_usd", models.DecimalField(blank=True, decimal_places=4, help_text="What one USD of list-price usage over the included amount is billed (1.0000: at list price).", max_digits=8, null=True)),
                ("max_members", models.PositiveIntegerField(blank=True, help_text="Seats; empty: unlimited.", null=True)),
                ("max_api_keys", models.PositiveIntegerField(blank=True, help_text="Active API keys; empty: unlimited.", null=True)),
                ("requests_per_minute", models.PositiveIntegerField()),
                ("tokens_per_minute", models.PositiveIntegerField()),
                ("max_concurrent_jobs", models.PositiveIntegerField()),
                ("max_concurrent_runs", models.PositiveIntegerField(help_text="Workflow runs running at once.")),
                ("max_map_items", models.PositiveIntegerField(help_text="Items one workflow map step may fan out to.")),
                ("min_retention_days", models.PositiveIntegerField(default=0, help_text="Shortest content retention allowed.")),
                ("max_retention_days", models.PositiveIntegerField(help_text="Longest content retention allowed.")),
                ("sso", models.BooleanField(default=False)),
                ("custom_roles", models.BooleanField(default=False)),
                ("byok", models.BooleanField(default=False, help_text="Bring your own provider key.")),
                ("semantic_cache", models.BooleanField(default=False)),
                ("audit_export", models.BooleanField(default=False)),
                ("webhooks", models.BooleanField(default=False)),
                ("past_due_grace_days", models.PositiveSmallIntegerField(default=7, help_text="Days a past-due subscription keeps this version before falling back to Free.")),
                ("stripe_price_id", models.CharField(blank=True, default="", max_length=255)),
                ("stripe_usage_price_id", models.CharField(blank=True, default="", max_length=255)),
                ("stripe_meter_event_name", models.CharField(blank=True, default="", max_length=100)),
                ("plan", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="versions", to="billing.plan")),
            ],
            options={
                "ordering": ("plan", "-number"),
                "constraints": [
                    models.UniqueConstraint(fields=("plan", "number"), name="billing_planversion_number_unique"),
                    models.CheckConstraint(condition=models.Q(("number__gte", 1)), name="billing_planversion_number_positive"),
                    models.CheckConstraint(condition=models.Q(("base_price_usd__gte", 0), ("included_usage_usd__gte", 0)), name="billing_planversion_amounts"),
                    models.CheckConstraint(condition=models.Q(models.Q(("overage_allowed", True), ("overage_price_per_usd__gt", 0)), models.Q(("overage_allowed", False), ("overage_price_per_usd__isnull", True)), _connector="OR"), name="billing_planversion_overage_priced"),
                    models.CheckConstraint(condition=models.Q(("max_members__isnull", True), ("max_members__gte", 1), _connector="OR"), name="billing_planversion_seats"),
                    models.CheckConstraint(condition=models.Q(("max_concurrent_jobs__gte", 1), ("max_concurrent_runs__gte", 1), ("max_map_items__gte", 1), ("requests_per_minute__gte", 1), ("tokens_per_minute__gte", 1)), name="billing_planversion_limits_positive"),
                    models.CheckConstraint(condition=models.Q(("min_retention_days__lte", models.F("max_retention_days"))), name="billing_planversion_retention_range"),
                ],
            },
        ),
        migrations.CreateModel(
            name="OrganizationPlanPeriod",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("starts_at", models.DateTimeField()),
                ("ends_at", models.DateTimeField(blank=True, null=True)),
                ("reason", models.CharField(choices=[("signup", "Sign-up"), ("change", "Plan change"), ("operator", "Operator"), ("stripe", "Stripe subscription"), ("migration", "Data migration")], max_length=20)),
                ("organization", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="plan_periods", to="tenants.organization")),
                ("plan_version", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="periods", to="billing.planversion")),
            ],
            options={
                "ordering": ("organization", "-starts_at"),
                "indexes": [models.Index(fields=["organization", "starts_at"], name="billing_period_org_start")],
                "constraints": [
                    models.UniqueConstraint(condition=models.Q(("ends_at__isnull", True)), fields=("organization",), name="billing_period_one_open"),
                    models.CheckConstraint(condition=models.Q(("ends_at__isnull", True), ("ends_at__gt", models.F("starts_at")), _connector="OR"), name="billing_period_ends_after_start"),
                ],
            },
        ),
        migrations.CreateModel(
            name="OrganizationSubscription",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("status", models.CharField(choices=[("none", "None"), ("trialing", "Trialing"), ("active", "Active"), ("past_due", "Past due"), ("unpaid", "Unpaid"), ("canceled", "Canceled"), ("incomplete", "Incomplete")], default="none", max_length=20)),
                ("current_period_start", models.DateTimeField(blank=True, null=True)),
                ("current_period_end", models.DateTimeField(blank=True, null=True)),
                ("cancel_at_period_end", models.BooleanField(default=False)),
                ("past_due_since", models.DateTimeField(blank=True, null=True)),
                ("grace_until", models.DateTimeField(blank=True, null=True)),
                ("stripe_subscription_id", models.CharField(blank=True, default="", max_length=255)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("organization", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="subscription", to="tenants.organization")),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("status__in", ["none", "trialing", "active", "past_due", "unpaid", "canceled", "incomplete"])), name="billing_subscription_status_valid"),
                    models.CheckConstraint(condition=models.Q(("current_period_end__isnull", True), ("current_period_start__isnull", True), ("current_period_end__gt", models.F("current_period_start")), _connector="OR"), name="billing_subscription_period_order"),
                ],
            },
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
        migrations.RemoveField(model_name="plan", name="limits"),
    ]
