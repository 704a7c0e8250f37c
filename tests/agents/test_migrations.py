"""Agents' move from apps.jobs keeps every row: agents 0001 and jobs 0005 move the model in Django's
state only, agents 0002 renames the table `jobs_agent` -> `agents_agent` and its check constraints;
jobs' foreign key to it, its SET NULL and the checks still hold, and the move runs backwards too."""

from __future__ import annotations

import importlib
import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from apps.agents.models import Agent
from apps.jobs.models import Job
from apps.tenants.models import Organization

BEFORE = [("jobs", "0004_job_work_vocabulary")]
AFTER = [("agents", "0002_agent_table"), ("jobs", "0005_agent_moves_to_agents")]
RENAMES: list[tuple[str, str, str, str]] = importlib.import_module("apps.agents.migrations.0002_agent_table")._RENAMES


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {row[0] for row in cursor.fetchall()}


def _constraints(table: str) -> dict[str, str]:
    """Constraint name -> the table it references (foreign keys) or its own (others)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT con.conname, coalesce(ref.relname, t.relname) FROM pg_constraint con
            JOIN pg_class t ON t.oid = con.conrelid
            LEFT JOIN pg_class ref ON ref.oid = con.confrelid
            WHERE t.relname = %s AND t.relnamespace = current_schema()::regnamespace
            """,
            [table],
        )
        return dict(cursor.fetchall())


def _indexes(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s", [table]
        )
        return {row[0] for row in cursor.fetchall()}


def _agent_names() -> set[str]:
    """The names of the agents' table's constraints and indexes and of jobs' foreign key to it."""
    table = "agents_agent" if "agents_agent" in _tables() else "jobs_agent"
    foreign_keys = {name for name, target in _constraints("jobs_job").items() if target == table}
    return {*_constraints(table), *_indexes(table), *foreign_keys}


def test_the_move_keeps_every_agent_and_jobs_foreign_key_and_runs_backwards(tenant: Organization) -> None:
    executor = _migrate(BEFORE)
    assert "jobs_agent" in _tables() and "agents_agent" not in _tables()
    old = executor.loader.project_state(BEFORE).apps
    OldAgent, OldJob = old.get_model("jobs", "Agent"), old.get_model("jobs", "Job")
    support = OldAgent.objects.create(
        id=uuid.uuid4(),
        name="support",
        system_prompt="Be brief.",
        model="gpt-4o-mini",
        temperature=0.2,
        knowledge_document_ids=[3, 5],
        max_cost_usd=Decimal("0.5"),
        created_by_label="k",
    )
    router = OldAgent.objects.create(id=uuid.uuid4(), name="router", policy="cheapest", min_quality=3)
    common = {"principal_kind": "api_key", "principal_id": "7", "principal_label": "k", "request": {"messages": []}}
    with_agent = OldJob.objects.create(id=uuid.uuid4(), agent=support, **common)
    without = OldJob.objects.create(id=uuid.uuid4(), **common)
    with connection.cursor() as cursor:  # the inserts' deferred checks, before the tables change
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    old_names = _agent_names()
    # 0002 renames every one of them (its list is the names jobs 0001 created).
    assert old_names == {old for _, _, old, _ in RENAMES}

    _migrate(AFTER)

    assert "agents_agent" in _tables() and "jobs_agent" not in _tables()
    agents = {agent.pk: agent for agent in Agent.objects.all()}
    assert set(agents) == {support.pk, router.pk}
    moved = agents[support.pk]
    assert (moved.name, moved.system_prompt, moved.model, moved.temperature) == (
        "support",
        "Be brief.",
        "gpt-4o-mini",
        0.2,
    )
    assert (moved.knowledge_document_ids, moved.max_cost_usd, moved.created_by_label) == ([3, 5], Decimal("0.5"), "k")
    assert (agents[router.pk].policy, agents[router.pk].min_quality) == ("cheapest", 3)
    assert Job.objects.get(pk=with_agent.pk).agent == moved
    assert Job.objects.get(pk=without.pk).agent is None
    names = _agent_names()
    assert {"agents_agent_model_or_policy", "agents_agent_quality_range", "agents_agent_temperature_range"} <= names
    assert not {name for name in names if "jobs_agent" in name}, "every name follows the table"
    # Django derives the name of `name`'s pattern index from the table when a later migration alters it.
    editor = connection.schema_editor()
    assert editor._create_index_name("agents_agent", ["name"], suffix="_like") in names  # type: ignore[attr-defined]
    assert any(name.endswith("_fk_agents_agent_id") for name in names)  # jobs' foreign key follows the table

    # The database still holds the invariants, under their new names.
    with pytest.raises(IntegrityError, match="agents_agent_quality_range"), transaction.atomic():
        Agent.objects.filter(pk=router.pk).update(min_quality=9)
    with pytest.raises(IntegrityError, match="agents_agent_model_or_policy"), transaction.atomic():
        Agent.objects.filter(pk=router.pk).update(model="gpt-4o-mini")
    Agent.objects.filter(pk=support.pk).delete()
    assert Job.objects.get(pk=with_agent.pk).agent_id is None  # SET_NULL, as before

    executor = _migrate(BEFORE)
    assert "jobs_agent" in _tables() and "agents_agent" not in _tables()
    assert _agent_names() == old_names
    OldAgent = executor.loader.project_state(BEFORE).apps.get_model("jobs", "Agent")
    assert list(OldAgent.objects.values_list("name", flat=True)) == ["router"]
    _migrate(AFTER)
    assert list(Agent.objects.values_list("name", flat=True)) == ["router"]
