"""The agents' table takes this app's name, `jobs_agent` -> `agents_agent`, and so do its constraints
and indexes: the names a fresh `agents_agent` would have, so that Django, which derives some names
(the `_like` index of `name`) from the table, finds them in later migrations. Renames only: the rows,
and jobs' foreign key to the table (renamed too), stay as they are."""

from django.db import migrations, models

_CHECKS = ("model_or_policy", "quality_range", "temperature_range")  # in Django's state as well
_RENAMES = [
    # (table, kind, old name, new name); the names are those jobs 0001 created.
    *[("agents_agent", "CONSTRAINT", f"jobs_agent_{suffix}", f"agents_agent_{suffix}") for suffix in _CHECKS],
    *[
        ("agents_agent", "CONSTRAINT", f"jobs_agent_{suffix}", f"agents_agent_{suffix}")
        for suffix in ("pkey", "name_key", "min_quality_check", "max_tokens_check", "retrieval_top_k_check")
    ],
    ("agents_agent", "INDEX", "jobs_agent_name_05bf5edb_like", "agents_agent_name_2453730f_like"),
    ("jobs_job", "CONSTRAINT", "jobs_job_agent_id_b5ee72ec_fk_jobs_agent_id", "jobs_job_agent_id_b5ee72ec_fk_agents_agent_id"),
]


def _sql(*, forwards: bool) -> list[str]:
    statements = []
    for table, kind, old, new in _RENAMES:
        source, target = (old, new) if forwards else (new, old)
        if kind == "INDEX":
            statements.append(f"ALTER INDEX {source} RENAME TO {target}")
        else:
            statements.append(f"ALTER TABLE {table} RENAME CONSTRAINT {source} TO {target}")
    return statements


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("jobs", "0005_agent_moves_to_agents"),
    ]

    operations = [
        migrations.AlterModelTable(name="agent", table=None),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(_sql(forwards=True), _sql(forwards=False))],
            state_operations=[
                *[migrations.RemoveConstraint(model_name="agent", name=f"jobs_agent_{suffix}") for suffix in _CHECKS],
                migrations.AddConstraint(
                    model_name="agent",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("model", ""), ("policy__in", ("cheapest", "fastest", "balanced"))),
                            models.Q(models.Q(("model", ""), _negated=True), ("policy", "")),
                            _connector="OR",
                        ),
                        name="agents_agent_model_or_policy",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="agent",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("min_quality__range", (1, 5))), name="agents_agent_quality_range"
                    ),
                ),
                migrations.AddConstraint(
                    model_name="agent",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("temperature__isnull", True), ("temperature__range", (0, 2)), _connector="OR"),
                        name="agents_agent_temperature_range",
                    ),
                ),
            ],
        ),
    ]
