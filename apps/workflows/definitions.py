"""Workflows and their versioned definitions: check a definition against the organization (the
models and agents it names), create a workflow, save a new version or rename it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from apps.accounts.principals import Principal
from apps.agents.selectors import agent_find
from apps.audit.services import audit_record
from apps.knowledge.search import knowledge_base_find
from apps.llm.calls import model_exists
from apps.tenants.models import Organization
from apps.workflows.definition import (
    MAX_DEFINITION_BYTES,
    Definition,
    DefinitionInvalid,
    Problem,
    definition_load,
    definition_parse,
)
from apps.workflows.models import Workflow, WorkflowVersion
from apps.workflows.selectors import workflow_latest_version
from cognitionos.refusals import Refusal


class WorkflowNameTaken(Refusal):
    """Another workflow of the organization has this name."""

    http_status = 409
    code = "workflow_name_taken"
    param = "name"

    def __init__(self, name: str) -> None:
        super().__init__(f"a workflow named {name} already exists")
        self.name = name


def definition_check(*, raw: object) -> tuple[dict[str, Any], Definition]:
    """Parse and validate a definition, including what needs the database: the models it names
    exist in the catalog, the agents and knowledge bases in the organization. Raises DefinitionInvalid."""
    source = definition_load(raw)
    if len(json.dumps(source, default=str)) > MAX_DEFINITION_BYTES:
        raise DefinitionInvalid([Problem("definition", f"a definition is limited to {MAX_DEFINITION_BYTES} bytes")])
    definition = definition_parse(source)
    problems: list[Problem] = []
    for step in definition.steps:
        for spec, where in ((step, step.location), (step.inner, f"{step.location}.step")):
            if spec is not None and spec.type == "retrieve":
                problems.extend(_retrieve_problems(spec.config, where))
            if spec is None or spec.type != "llm":
                continue
            model = spec.config.get("model")
            if model is not None and not model_exists(model, kind="chat"):
                problems.append(Problem(f"{where}.model", f"unknown model {model!r}; see the model catalog"))
            agent = spec.config.get("agent")
            if agent is not None and agent_find(reference=agent) is None:
                problems.append(Problem(f"{where}.agent", f"no agent {agent!r} in this organization"))
    if problems:
        raise DefinitionInvalid(problems)
    return source, definition


def _retrieve_problems(config: Mapping[str, Any], where: str) -> list[Problem]:
    """A retrieve step names a knowledge base of the organization (document ids are no longer taken)."""
    problems = []
    if "documents" in config:
        problems.append(
            Problem(
                f"{where}.documents", "retrieve steps search a `knowledge_base` now (its id or name), not documents"
            )
        )
    reference = config.get("knowledge_base")
    if reference is None:
        problems.append(
            Problem(f"{where}.knowledge_base", "missing field: the knowledge base to search (its id or name)")
        )
    elif isinstance(reference, str) and knowledge_base_find(reference=reference) is None:
        problems.append(Problem(f"{where}.knowledge_base", f"no knowledge base {reference!r} in this organization"))
    return problems


def _name_free(name: str, workflow: Workflow | None = None) -> None:
    others = Workflow.objects.filter(name=name)
    if workflow is not None:
        others = others.exclude(pk=workflow.pk)
    if others.exists():
        raise WorkflowNameTaken(name)


@transaction.atomic
def workflow_create(*, organization: Organization, actor: Principal, name: str, definition: object) -> WorkflowVersion:
    """A new workflow with its first version."""
    source, _ = definition_check(raw=definition)
    _name_free(name)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(name=name, created_by_label=actor.label)
    except IntegrityError as error:  # created concurrently under the same name
        raise WorkflowNameTaken(name) from error
    version = WorkflowVersion.objects.create(
        workflow=workflow, number=1, definition=source, created_by_label=actor.label
    )
    audit_record(
        organization=organization, actor=actor, action="workflow.created", target=workflow, metadata={"version": 1}
    )
    return version


@transaction.atomic
def workflow_update(
    *,
    organization: Organization,
    actor: Principal,
    workflow: Workflow,
    name: str | None = None,
    definition: object | None = None,
) -> WorkflowVersion:
    """Rename a workflow and/or save a new version of its definition (runs keep their version)."""
    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
    latest = workflow_latest_version(workflow=workflow)
    changes: dict[str, Any] = {}
    if name is not None and name != workflow.name:
        _name_free(name, workflow)
        changes["name"] = {"from": workflow.name, "to": name}
        workflow.name = name
        try:
            with transaction.atomic():
                workflow.save(update_fields=["name"])
        except IntegrityError as error:
            raise WorkflowNameTaken(name) from error
    if definition is not None:
        source, _ = definition_check(raw=definition)
        latest = WorkflowVersion.objects.create(
            workflow=workflow, number=latest.number + 1, definition=source, created_by_label=actor.label
        )
        changes["version"] = latest.number
    if changes:
        audit_record(
            organization=organization, actor=actor, action="workflow.updated", target=workflow, metadata=changes
        )
    return latest
