"""Webhook deliveries move onto the durable-work runtime (apps.work): `pending` and `retrying`
become `queued` (an attempt in flight under its lease: `running`, its heartbeat at the attempt's
start, so the reaper takes it back once stale), `dispatched_at` becomes `admitted_at`, `last_error`
becomes `error_message` with an `error_class`, `delivered_at` becomes `finished_at` (a failed
delivery's end: its last attempt, the best time known), the lease (`locked_until`) goes, and the
runtime's check constraints apply. Every row is kept."""

from django.db import migrations, models
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Now

SCHEDULED = ("pending", "retrying")


def to_work_vocabulary(apps, schema_editor):
    Delivery = apps.get_model("webhooks", "WebhookDelivery")
    rows = Delivery.objects
    rows.update(principal_label="webhook events")
    rows.filter(status__in=SCHEDULED, locked_until__gt=Now(), attempts__gte=1).update(
        status="running",
        started_at=Coalesce(F("last_attempt_at"), F("created_at")),
        heartbeat_at=Coalesce(F("last_attempt_at"), F("created_at")),
        next_attempt_at=None,
    )
    rows.filter(status__in=SCHEDULED).update(status="queued")
    rows.filter(status="succeeded").update(
        finished_at=Coalesce(F("delivered_at"), F("last_attempt_at"), F("created_at"))
    )
    rows.filter(status="failed").update(finished_at=Coalesce(F("last_attempt_at"), F("created_at")))
    rows.filter(attempts__gte=1, started_at=None).update(started_at=Coalesce(F("last_attempt_at"), F("created_at")))
    failed = rows.exclude(error_message="")
    failed.filter(last_response_status__isnull=False).update(error_class="http_error")
    failed.filter(error_message__startswith="refused:").update(error_class="refused")
    failed.filter(error_message__startswith="not sent: the endpoint is disabled").update(
        error_class="endpoint_disabled"
    )
    failed.filter(
        Q(error_message="the previous attempt did not report back") | Q(error_message="out of attempts")
    ).update(error_class="WorkerLost")
    failed.filter(error_class="").update(error_class="unreachable")


def from_work_vocabulary(apps, schema_editor):
    Delivery = apps.get_model("webhooks", "WebhookDelivery")
    rows = Delivery.objects
    rows.filter(status="running").update(
        status="queued",
        locked_until=F("heartbeat_at"),
        next_attempt_at=Coalesce(F("heartbeat_at"), F("created_at")),
    )
    rows.filter(status="queued", next_attempt_at=None).update(next_attempt_at=Coalesce(F("admitted_at"), Now()))
    rows.filter(status="queued", attempts__lte=1, error_message="").update(status="pending")
    rows.filter(status="queued").update(status="retrying")
    rows.filter(status="retrying", attempts=0).update(attempts=1)
    rows.filter(status="succeeded").update(delivered_at=F("finished_at"))
    rows.filter(status="cancelled").update(status="failed")


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0003_delivery_content_deleted"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="webhookdelivery", name="webhooks_delivery_status_valid"),
        migrations.RemoveConstraint(model_name="webhookdelivery", name="webhooks_delivery_scheduled_iff_next_attempt"),
        migrations.RemoveConstraint(model_name="webhookdelivery", name="webhooks_delivery_succeeded_iff_delivered"),
        migrations.RemoveConstraint(model_name="webhookdelivery", name="webhooks_delivery_pending_before_first_result"),
        migrations.RemoveConstraint(model_name="webhookdelivery", name="webhooks_delivery_retrying_after_attempt"),
        migrations.RemoveIndex(model_name="webhookdelivery", name="webhooks_delivery_due"),
        migrations.RenameField(model_name="webhookdelivery", old_name="dispatched_at", new_name="admitted_at"),
        migrations.RenameField(model_name="webhookdelivery", old_name="last_error", new_name="error_message"),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="error_message",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="finished_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="error_class",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="cost_usd",
            field=models.DecimalField(decimal_places=8, default=0, max_digits=14),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="principal_kind",
            # Deliveries so far were events of the organization's work: the system asked.
            field=models.CharField(default="system", max_length=20),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="principal_id",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="principal_label",
            field=models.CharField(blank=True, default="", max_length=254),
        ),
        migrations.RunPython(to_work_vocabulary, from_work_vocabulary),
        migrations.RemoveField(model_name="webhookdelivery", name="delivered_at"),
        migrations.RemoveField(model_name="webhookdelivery", name="locked_until"),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="queued",
                max_length=10,
            ),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(("next_attempt_at__isnull", False)),
                fields=["next_attempt_at"],
                name="webhooks_delivery_due",
            ),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(("status", "queued"), ("status", "running"), _connector="OR"),
                fields=["status"],
                name="webhooks_delivery_active",
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["queued", "running", "succeeded", "failed", "cancelled"])),
                name="webhooks_webhookdelivery_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("finished_at__isnull", False), ("status__in", ("succeeded", "failed", "cancelled"))),
                    models.Q(
                        models.Q(("status__in", ("succeeded", "failed", "cancelled")), _negated=True),
                        ("finished_at__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="webhooks_webhookdelivery_finished_iff_finished_at",
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "running"), _negated=True),
                    models.Q(("attempts__gte", 1), ("heartbeat_at__isnull", False), ("started_at__isnull", False)),
                    _connector="OR",
                ),
                name="webhooks_webhookdelivery_running_is_held",
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(("next_attempt_at__isnull", True), ("status", "queued"), _connector="OR"),
                name="webhooks_webhookdelivery_next_attempt_only_queued",
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_usd__gte", 0)), name="webhooks_webhookdelivery_cost_not_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "succeeded"), _negated=True), ("attempts__gte", 1), _connector="OR"
                ),
                name="webhooks_delivery_succeeded_after_attempt",
            ),
        ),
    ]
