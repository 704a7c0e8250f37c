"""Workflow steps move onto the durable-work runtime (apps.work): a step waiting to run is `queued`
(was `pending`), `dispatched_at` becomes `admitted_at`, and a step gets the runtime's other fields,
carried over from its run where the run knows them (created, who asked, content deleted), with the
runtime's check constraints (plus `skipped`, a final status of steps only). A run's heartbeat is the
runtime's per step now: `WorkflowRun.heartbeat_at` goes. Every row is kept."""

from django.db import migrations, models
from django.db.models import F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Now


def steps_to_work_vocabulary(apps, schema_editor):
    StepRun = apps.get_model("workflows", "StepRun")
    WorkflowRun = apps.get_model("workflows", "WorkflowRun")
    run = WorkflowRun.objects.filter(pk=OuterRef("run_id"))
    StepRun.objects.update(
        created_at=Subquery(run.values("created_at")[:1]),
        principal_kind=Subquery(run.values("principal_kind")[:1]),
        principal_id=Subquery(run.values("principal_id")[:1]),
        principal_label=Subquery(run.values("principal_label")[:1]),
        content_deleted_at=Subquery(run.values("content_deleted_at")[:1]),
    )
    StepRun.objects.filter(status="pending").update(status="queued")
    # A running row is held by a worker: it has started, beats, and has an attempt number.
    StepRun.objects.filter(status="running").filter(Q(started_at=None) | Q(heartbeat_at=None) | Q(attempts=0)).update(
        started_at=Coalesce(F("started_at"), F("admitted_at"), F("created_at")),
        heartbeat_at=Coalesce(F("heartbeat_at"), F("started_at"), F("admitted_at"), F("created_at")),
        attempts=models.Case(
            models.When(attempts=0, then=1), default=F("attempts"), output_field=models.PositiveSmallIntegerField()
        ),
    )


def steps_to_old_vocabulary(apps, schema_editor):
    StepRun = apps.get_model("workflows", "StepRun")
    StepRun.objects.filter(status="queued").update(status="pending")


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0003_run_admission"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="steprun", name="workflows_step_status_valid"),
        migrations.RemoveConstraint(model_name="steprun", name="workflows_step_finished_iff_finished_at"),
        migrations.RemoveConstraint(model_name="steprun", name="workflows_step_running_has_heartbeat"),
        migrations.RemoveConstraint(model_name="steprun", name="workflows_step_cost_not_negative"),
        migrations.RenameField(model_name="steprun", old_name="dispatched_at", new_name="admitted_at"),
        migrations.AddField(
            model_name="steprun",
            name="created_at",
            field=models.DateTimeField(db_default=Now()),
        ),
        migrations.AddField(
            model_name="steprun",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="steprun",
            name="principal_kind",
            field=models.CharField(default="", max_length=20),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="steprun",
            name="principal_id",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="steprun",
            name="principal_label",
            field=models.CharField(blank=True, default="", max_length=254),
        ),
        migrations.AddField(
            model_name="steprun",
            name="content_deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="steprun",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                    ("skipped", "Skipped"),
                ],
                default="queued",
                max_length=10,
            ),
        ),
        migrations.RunPython(steps_to_work_vocabulary, steps_to_old_vocabulary),
        migrations.RemoveField(model_name="workflowrun", name="heartbeat_at"),
        migrations.AddIndex(
            model_name="steprun",
            index=models.Index(
                condition=models.Q(("admitted_at__isnull", False), ("status", "queued")),
                fields=["admitted_at"],
                name="workflows_step_admitted",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("status__in", ["queued", "running", "succeeded", "failed", "cancelled", "skipped"])
                ),
                name="workflows_steprun_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("finished_at__isnull", False),
                        ("status__in", ("succeeded", "failed", "cancelled", "skipped")),
                    ),
                    models.Q(
                        models.Q(("status__in", ("succeeded", "failed", "cancelled", "skipped")), _negated=True),
                        ("finished_at__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="workflows_steprun_finished_iff_finished_at",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "running"), _negated=True),
                    models.Q(("attempts__gte", 1), ("heartbeat_at__isnull", False), ("started_at__isnull", False)),
                    _connector="OR",
                ),
                name="workflows_steprun_running_is_held",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(("next_attempt_at__isnull", True), ("status", "queued"), _connector="OR"),
                name="workflows_steprun_next_attempt_only_queued",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_usd__gte", 0)), name="workflows_steprun_cost_not_negative"
            ),
        ),
    ]
