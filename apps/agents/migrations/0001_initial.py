"""Agent moves here from apps.jobs, in Django's state only: its table `jobs_agent` and every row stay
where they are (0002 renames the table), and jobs 0005 points `Job.agent` at this model."""

import uuid

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("jobs", "0004_job_work_vocabulary"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Agent",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("name", models.CharField(max_length=100, unique=True)),
                        ("description", models.TextField(blank=True, default="")),
                        ("system_prompt", models.TextField(blank=True, default="")),
                        ("model", models.CharField(blank=True, default="", max_length=100)),
                        ("policy", models.CharField(blank=True, default="", max_length=20)),
                        ("min_quality", models.PositiveSmallIntegerField(default=1)),
                        ("temperature", models.FloatField(blank=True, null=True)),
                        ("max_tokens", models.PositiveIntegerField(blank=True, null=True)),
                        ("knowledge_document_ids", models.JSONField(blank=True, default=list)),
                        ("retrieval_top_k", models.PositiveSmallIntegerField(default=4)),
                        ("max_cost_usd", models.DecimalField(blank=True, decimal_places=6, max_digits=12, null=True)),
                        ("created_by_label", models.CharField(blank=True, default="", max_length=254)),
                        ("created_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "jobs_agent",
                        "ordering": ("name",),
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("model", ""), ("policy__in", ("cheapest", "fastest", "balanced"))),
                                    models.Q(models.Q(("model", ""), _negated=True), ("policy", "")),
                                    _connector="OR",
                                ),
                                name="jobs_agent_model_or_policy",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("min_quality__range", (1, 5))), name="jobs_agent_quality_range"
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("temperature__isnull", True), ("temperature__range", (0, 2)), _connector="OR"
                                ),
                                name="jobs_agent_temperature_range",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
