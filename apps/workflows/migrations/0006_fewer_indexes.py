"""Fewer relations per organization (issue 15): drop indexes no query needs. Each one is either
a prefix of another index on the same table, a duplicate, or a varchar_pattern_ops index Django
adds for LIKE 'x%' on a unique CharField that no query filters with LIKE. The reverse recreates
each index as it was."""

import django.db.models.deletion
from django.db import migrations, models


def _drop(name: str, table: str, columns: str) -> migrations.RunSQL:
    """Drop one index (the comment above each call says why nothing needs it); the reverse recreates it."""
    return migrations.RunSQL(
        sql=f"DROP INDEX {name}",
        reverse_sql=f"CREATE INDEX {name} ON {table} USING btree ({columns})",
        elidable=False,
    )


class Migration(migrations.Migration):
    dependencies = [("workflows", "0005_run_list_index")]

    operations = [
        # Prefix of workflows_step_unique (run_id, name).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='steprun',
                    name='run',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='workflows.workflowrun'),
                ),
            ],
            database_operations=[_drop('workflows_steprun_run_id_7280c46a', 'workflows_steprun', 'run_id')],
        ),
        # Prefix of workflows_run_workflow (workflow_id, created_at).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='workflowrun',
                    name='workflow',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='runs', to='workflows.workflow'),
                ),
            ],
            database_operations=[_drop('workflows_workflowrun_workflow_id_51c8c945', 'workflows_workflowrun', 'workflow_id')],
        ),
        # Prefix of workflows_version_unique (workflow_id, number).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='workflowversion',
                    name='workflow',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='workflows.workflow'),
                ),
            ],
            database_operations=[_drop('workflows_workflowversion_workflow_id_bbe86d4b', 'workflows_workflowversion', 'workflow_id')],
        ),
        # Names are matched by equality (workflows_workflow_name_key) or icontains, which no btree serves.
        _drop('workflows_workflow_name_bc2d35ca_like', 'workflows_workflow', 'name varchar_pattern_ops'),
    ]
