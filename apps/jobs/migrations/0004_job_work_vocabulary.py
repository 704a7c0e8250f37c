"""Jobs move onto the durable-work runtime (apps.work): `runs` becomes `attempts`, the boolean
`content_removed` becomes `content_deleted_at` (when: the job's end, the best time known for rows
emptied before), and `next_attempt_at` is added, with the runtime's check constraints. Every row
is kept."""

from django.db import migrations, models
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Now


def content_removed_to_deleted_at(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    Job.objects.filter(content_removed=True).update(content_deleted_at=Coalesce(F("finished_at"), Now()))
    # A running row is held by a worker: it has started and beats (the claim always set both).
    Job.objects.filter(status="running").filter(Q(started_at=None) | Q(heartbeat_at=None)).update(
        started_at=Coalesce(F("started_at"), F("admitted_at"), F("created_at")),
        heartbeat_at=Coalesce(F("heartbeat_at"), F("started_at"), F("admitted_at"), F("created_at")),
    )


def content_deleted_at_to_removed(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    Job.objects.filter(content_deleted_at__isnull=False).update(content_removed=True)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_partial_index_ors"),
    ]

    operations = [
        migrations.RenameField(model_name="job", old_name="runs", new_name="attempts"),
        migrations.AddField(
            model_name="job",
            name="content_deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(content_removed_to_deleted_at, content_deleted_at_to_removed),
        migrations.RemoveField(model_name="job", name="content_removed"),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("content_deleted_at", None)), fields=["finished_at"], name="jobs_job_content_kept"
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "running"), _negated=True),
                    models.Q(("attempts__gte", 1), ("heartbeat_at__isnull", False), ("started_at__isnull", False)),
                    _connector="OR",
                ),
                name="jobs_job_running_is_held",
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(("next_attempt_at__isnull", True), ("status", "queued"), _connector="OR"),
                name="jobs_job_next_attempt_only_queued",
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_usd__gte", 0)), name="jobs_job_cost_not_negative"
            ),
        ),
    ]
