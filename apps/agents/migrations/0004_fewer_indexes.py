"""Fewer relations per organization (issue 15): drop indexes no query needs. Each one is either
a prefix of another index on the same table, a duplicate, or a varchar_pattern_ops index Django
adds for LIKE 'x%' on a unique CharField that no query filters with LIKE. The reverse recreates
each index as it was."""

from django.db import migrations


def _drop(name: str, table: str, columns: str) -> migrations.RunSQL:
    """Drop one index (the comment above each call says why nothing needs it); the reverse recreates it."""
    return migrations.RunSQL(
        sql=f"DROP INDEX {name}",
        reverse_sql=f"CREATE INDEX {name} ON {table} USING btree ({columns})",
        elidable=False,
    )


class Migration(migrations.Migration):
    dependencies = [("agents", "0003_knowledge_bases")]

    operations = [
        # Agents are found by name with equality and listed ORDER BY name: agents_agent_name_key serves both.
        _drop('agents_agent_name_2453730f_like', 'agents_agent', 'name varchar_pattern_ops'),
        # Prefix of the M2M table's unique (agent_id, knowledgebase_id) index.
        _drop('agents_agent_knowledge_bases_agent_id_4b9620f2', 'agents_agent_knowledge_bases', 'agent_id'),
    ]
