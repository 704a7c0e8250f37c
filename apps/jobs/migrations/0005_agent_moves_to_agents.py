"""Agent moves to apps.agents (its 0001): in Django's state `Job.agent` now points there and
jobs' Agent is gone. Nothing changes in the database: the foreign key keeps its table and rows."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("jobs", "0004_job_work_vocabulary"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="agent",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="jobs",
                        to="agents.agent",
                    ),
                ),
                migrations.DeleteModel(name="Agent"),
            ],
            database_operations=[],
        ),
    ]
