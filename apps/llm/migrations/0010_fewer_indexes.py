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
    dependencies = [("llm", "0009_knowledge_ingestion_source")]

    operations = [
        # Prefix of llm_hold_unique (attempt_id, window_id), which serves the settle's DELETE by attempt_id.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='budgethold',
                    name='attempt',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='holds', to='llm.usageattempt'),
                ),
            ],
            database_operations=[_drop('llm_budgethold_attempt_id_def50e4f', 'llm_budgethold', 'attempt_id')],
        ),
        # Prefix of llm_window_unique (budget_id, period_start), which serves the reserve's join by budget.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='budgetwindow',
                    name='budget',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='windows', to='llm.budget'),
                ),
            ],
            database_operations=[_drop('llm_budgetwindow_budget_id_59190081', 'llm_budgetwindow', 'budget_id')],
        ),
        # Reads go by key (unique index); the sweep's expires_at OR created_at filter cannot use it.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='cachedresponse',
                    name='expires_at',
                    field=models.DateTimeField(),
                ),
            ],
            database_operations=[_drop('llm_cachedresponse_expires_at_024bce9e', 'llm_cachedresponse', 'expires_at')],
        ),
        # Lookups use llm_semantic_context (context_hash, model_name, expires_at); the sweep filters with OR.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='semanticcacheentry',
                    name='expires_at',
                    field=models.DateTimeField(),
                ),
            ],
            database_operations=[_drop('llm_semanticcacheentry_expires_at_bfbf1d8f', 'llm_semanticcacheentry', 'expires_at')],
        ),
        # No LIKE on the cache key: equality is served by llm_cachedresponse_key_key.
        _drop('llm_cachedresponse_key_d11a269b_like', 'llm_cachedresponse', 'key varchar_pattern_ops'),
        # No LIKE on call content's request_id: equality is served by llm_callcontent_request_id_key.
        _drop('llm_callcontent_request_id_c3517db3_like', 'llm_callcontent', 'request_id varchar_pattern_ops'),
        # No LIKE on provider: equality is served by llm_providercredential_provider_key.
        _drop('llm_providercredential_provider_cda984ac_like', 'llm_providercredential', 'provider varchar_pattern_ops'),
    ]
