# Usage-based billing (apps.billing.metering): each settled ledger row is sent to Stripe's billing
# meter once; `metered_at` records that Stripe accepted it. Adding a nullable column rewrites nothing;
# the partial index holds only what is left to send.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0007_request_log_source"),
    ]

    operations = [
        migrations.AddField(
            model_name="usageattempt",
            name="metered_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="usageattempt",
            index=models.Index(
                condition=models.Q(("metered_at__isnull", True), models.Q(("status", "reserved"), _negated=True)),
                fields=["id"],
                name="llm_attempt_unmetered",
            ),
        ),
    ]
