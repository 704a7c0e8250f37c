"""Stripe bookkeeping (public schema): the organization's customer, processed webhook events, and
subscriptions and invoices as of the newest event applied to each."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_plan_versions"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="StripeCustomer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("customer_id", models.CharField(max_length=255, unique=True)),
                ("livemode", models.BooleanField(default=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "organization",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="stripe_customer",
                        to="tenants.organization",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="StripeEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("event_id", models.CharField(max_length=255, unique=True)),
                ("type", models.CharField(max_length=100)),
                ("created", models.DateTimeField(help_text="When Stripe created the event.")),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("applied", "Applied"),
                            ("stale", "Older than what was applied"),
                            ("ignored", "Not for us (unknown customer or type)"),
                        ],
                        max_length=20,
                    ),
                ),
                ("processed_at", models.DateTimeField(auto_now_add=True)),
                (
                    "organization",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="tenants.organization",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["organization", "processed_at"], name="billing_stripeevent_org")],
            },
        ),
        migrations.CreateModel(
            name="StripeSubscription",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("subscription_id", models.CharField(max_length=255, unique=True)),
                ("customer_id", models.CharField(max_length=255)),
                ("status", models.CharField(max_length=30)),
                ("price_id", models.CharField(blank=True, default="", max_length=255)),
                ("cancel_at_period_end", models.BooleanField(default=False)),
                ("current_period_start", models.DateTimeField(blank=True, null=True)),
                ("current_period_end", models.DateTimeField(blank=True, null=True)),
                ("created", models.DateTimeField(help_text="When Stripe created the subscription.")),
                ("event_created", models.DateTimeField(help_text="Time of the newest event applied.")),
                ("event_id", models.CharField(max_length=255)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="stripe_subscriptions",
                        to="tenants.organization",
                    ),
                ),
            ],
            options={"ordering": ("-created",)},
        ),
        migrations.CreateModel(
            name="StripeInvoice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("invoice_id", models.CharField(max_length=255, unique=True)),
                ("subscription_id", models.CharField(blank=True, default="", max_length=255)),
                ("status", models.CharField(max_length=30)),
                ("number", models.CharField(blank=True, default="", max_length=100)),
                ("currency", models.CharField(default="usd", max_length=3)),
                (
                    "amount_due",
                    models.BigIntegerField(default=0, help_text="In the currency's smallest unit (cents)."),
                ),
                ("amount_paid", models.BigIntegerField(default=0)),
                ("hosted_invoice_url", models.URLField(blank=True, default="", max_length=1000)),
                ("period_start", models.DateTimeField(blank=True, null=True)),
                ("period_end", models.DateTimeField(blank=True, null=True)),
                ("created", models.DateTimeField()),
                ("event_created", models.DateTimeField()),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="stripe_invoices",
                        to="tenants.organization",
                    ),
                ),
            ],
            options={
                "ordering": ("-created",),
                "indexes": [models.Index(fields=["organization", "-created"], name="billing_stripeinvoice_org")],
            },
        ),
    ]
