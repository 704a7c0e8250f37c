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
    dependencies = [("webhooks", "0004_delivery_work_vocabulary")]

    operations = [
        # Prefix of webhooks_delivery_log (endpoint_id, created_at DESC, id DESC).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='webhookdelivery',
                    name='endpoint',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='webhooks.webhookendpoint'),
                ),
            ],
            database_operations=[_drop('webhooks_webhookdelivery_endpoint_id_d5bfb5c8', 'webhooks_webhookdelivery', 'endpoint_id')],
        ),
    ]
