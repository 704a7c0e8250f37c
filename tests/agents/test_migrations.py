"""Agents' move from apps.jobs keeps every row: agents 0001 and jobs 0005 move the model in Django's
state only, agents 0002 renames the table `jobs_agent` -> `agents_agent` and its check constraints;
jobs' foreign key to it, its SET NULL and the checks still hold, and the move runs backwards too."""

from __future__ import annotations

import importlib
import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from apps.agents.models import Agent
from apps.jobs.models import Job
from apps.tenants.models import Organization
from tests.knowledge.factories import document_make, knowledge_base_make
from tests.support.schema_migrations import constraints_check_now, migrate, models_at

BEFORE = [("jobs", "0004_job_work_vocabulary")]
AFTER = [("agents", "0002_agent_table"), ("jobs", "0005_agent_moves_to_agents")]
RENAMES: list[tuple[str, str, str, str]] = importlib.import_module("apps.agents.migrations.0002_agent_table")._RENAMES


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
    executor = migrate(BEFORE)
    assert "jobs_agent" in _tables() and "agents_agent" not in _tables()
    old = models_at(executor, BEFORE)
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
    constraints_check_now()  # the inserts' deferred checks, before the tables change
    old_names = _agent_names()
    # 0002 renames every one of them (its list is the names jobs 0001 created).
    assert old_names == {old for _, _, old, _ in RENAMES}

    executor = migrate(AFTER)

    assert "agents_agent" in _tables() and "jobs_agent" not in _tables()
    agents = {agent.pk: agent for agent in Agent.objects.all()}
    # The document ids as they were after the move (agents 0003 turns them into knowledge bases).
    AfterAgent = models_at(executor, AFTER).get_model("agents", "Agent")
    assert set(agents) == {support.pk, router.pk}
    moved = agents[support.pk]
    assert (moved.name, moved.system_prompt, moved.model, moved.temperature) == (
        "support",
        "Be brief.",
        "gpt-4o-mini",
        0.2,
    )
    assert AfterAgent.objects.get(pk=support.pk).knowledge_document_ids == [3, 5]
    assert (moved.max_cost_usd, moved.created_by_label) == (Decimal("0.5"), "k")
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
    AfterAgent.objects.filter(pk=support.pk).delete()  # the model of that state (no knowledge bases yet)
    assert Job.objects.get(pk=with_agent.pk).agent_id is None  # SET_NULL, as before

    executor = migrate(BEFORE)
    assert "jobs_agent" in _tables() and "agents_agent" not in _tables()
    assert _agent_names() == old_names
    OldAgent = models_at(executor, BEFORE).get_model("jobs", "Agent")
    assert list(OldAgent.objects.values_list("name", flat=True)) == ["router"]
    migrate(AFTER)
    assert list(Agent.objects.values_list("name", flat=True)) == ["router"]


def test_an_agents_document_ids_become_the_knowledge_bases_those_documents_are_in(tenant: Organization) -> None:
    """Knowledge 0003 moved the documents of before into a knowledge base, each keeping its id as
    metadata `legacy_id`: agents 0003 names those knowledge bases instead, and runs backwards."""
    before, after = [("agents", "0002_agent_table")], [("agents", "0003_knowledge_bases")]
    executor = migrate(before)
    OldAgent = models_at(executor, before).get_model("agents", "Agent")
    moved = knowledge_base_make(name="Documents")
    document_make(moved, title="refunds", metadata={"legacy_id": 3})
    document_make(moved, title="shipping", metadata={"legacy_id": 5})
    other = knowledge_base_make(name="Other")
    document_make(other, title="faq", metadata={"legacy_id": 7})
    document_make(other, title="uploaded later")
    support = OldAgent.objects.create(id=uuid.uuid4(), name="support", model="m", knowledge_document_ids=[3, 5, 99])
    both = OldAgent.objects.create(id=uuid.uuid4(), name="both", model="m", knowledge_document_ids=[5, 7])
    plain = OldAgent.objects.create(id=uuid.uuid4(), name="plain", model="m")

    migrate(after)

    def bases(agent_id: uuid.UUID) -> set[str]:
        return {base.name for base in Agent.objects.get(pk=agent_id).knowledge_bases.all()}

    assert bases(support.pk) == {"Documents"}  # 99 was no document: dropped
    assert bases(both.pk) == {"Documents", "Other"}
    assert bases(plain.pk) == set()

    executor = migrate(before)
    OldAgent = models_at(executor, before).get_model("agents", "Agent")
    ids = dict(OldAgent.objects.values_list("name", "knowledge_document_ids"))
    # Backwards: the legacy ids of every document of the agent's knowledge bases.
    assert ids == {"support": [3, 5], "both": [3, 5, 7], "plain": []}
    migrate(after)
