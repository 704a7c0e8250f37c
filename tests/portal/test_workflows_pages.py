"""The portal's workflows pages: the editor (YAML and JSON, problems at their step, nothing saved),
versions, the cost preview before a run, starting, following, cancelling and re-running runs, per
organization and per role, with list pages whose queries don't grow with their rows."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.llm.models import Budget, BudgetWindow
from apps.portal.workflows_pages import EXAMPLE, EXAMPLE_YAML, input_names
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.workflows.definition import definition_parse
from apps.workflows.models import RunStatus, StepRun, StepStatus, Workflow, WorkflowRun
from apps.workflows.preview import workflow_cost_preview
from apps.workflows.runs import run_start
from apps.workflows.selectors import definition_of, workflow_latest_version
from tests.factories import member_make
from tests.portal.conftest import ClientFor
from tests.workflows.factories import KEY, workflow_make

MISSPELLED = EXAMPLE_YAML.replace("{{ steps.summary.output }}", "{{ steps.sumary.output }}")
BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
steps: [*d, *d, *d, *d, *d, *d, *d, *d, *d]
"""


def signed_in(client_for: ClientFor, organization: Organization, role: str = "developer") -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def workflows_in(organization: Organization) -> list[str]:
    with organization_schema(organization):
        return list(Workflow.objects.order_by("name").values_list("name", flat=True))


def text(response: Any) -> str:
    return str(response.content.decode())


def step_card(html: str, index: int) -> str:
    """The drawn step `index` (its <li id="step-N"> up to the next step or the end of the list)."""
    found = re.search(rf'<li class="wf-step[^"]*" id="step-{index}".*?</li>\s*(?=<li class="wf-step|</ol>)', html, re.S)
    assert found, f"step {index} is not drawn"
    return found.group(0)


def make_workflow(organization: Organization, name: str = "example", definition: Any = None) -> Workflow:
    with organization_schema(organization):
        return workflow_make(organization, definition or EXAMPLE, name=name)


def make_run(organization: Organization, workflow: Workflow, data: dict[str, Any] | None = None) -> WorkflowRun:
    with organization_schema(organization):
        return run_start(organization=organization, principal=KEY, workflow=workflow, input=data or {"text": "hi"})


# -- the editor ---------------------------------------------------------------------------------------------


def test_the_new_workflow_editor_starts_with_the_docs_example_drawn_as_two_stages(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    listing = client.get("/workflows/")
    assert listing.status_code == 200
    assert "No workflows yet." in text(listing) and 'href="/workflows/new/"' in text(listing)
    page = client.get("/workflows/new/")
    html = text(page)
    assert page.status_code == 200
    assert "Summarize: {{ input.text }}" in html  # the docs' example, prefilled (escaped braces are none)
    assert '<label for="id_definition">Definition</label>' in html and '<label for="id_name">Name</label>' in html
    assert "Stage 1" in html and "Stage 2" in html
    assert 'After <a href="#step-0">summary</a>' in step_card(html, 1)
    as_json = client.get("/workflows/new/?format=json")
    assert "&quot;name&quot;: &quot;summary&quot;" in text(as_json) and re.search(
        r'value="json"[^>]*checked', text(as_json)
    )


def test_a_workflow_is_created_from_yaml(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization)
    created = client.post("/workflows/new/", {"name": "translate", "format": "yaml", "definition": EXAMPLE_YAML})
    assert created.status_code == 302
    with organization_schema(organization):
        workflow = Workflow.objects.get(name="translate")
        version = workflow_latest_version(workflow=workflow)
        assert version.number == 1 and version.created_by_label == user.email
        assert [step["name"] for step in version.definition["steps"]] == ["summary", "french"]
        assert AuditEvent.objects.filter(action="workflow.created").count() == 1
    assert created["Location"] == f"/workflows/{workflow.pk}/"
    detail = client.get(created["Location"])
    html = text(detail)
    assert detail.status_code == 200 and "Created translate (version 1)." in html
    assert "gpt-4o-mini" in html and "policy cheapest" in html and "Version 1" in html


def test_a_workflow_is_created_from_json(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    created = client.post("/workflows/new/", {"name": "json one", "format": "json", "definition": json.dumps(EXAMPLE)})
    assert created.status_code == 302
    assert workflows_in(organization) == ["json one"]
    # JSON format means JSON: YAML text is refused with where the JSON broke.
    refused = client.post("/workflows/new/", {"name": "yaml as json", "format": "json", "definition": EXAMPLE_YAML})
    assert refused.status_code == 400
    assert "invalid JSON at line 1, column 1" in text(refused)
    assert workflows_in(organization) == ["json one"]


def test_a_misspelled_step_reference_is_shown_at_its_step_and_nothing_is_saved(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    refused = client.post("/workflows/new/", {"name": "typo", "format": "yaml", "definition": MISSPELLED})
    assert refused.status_code == 400
    html = text(refused)
    # At the step: the second step's card carries the message, the first's doesn't.
    second = step_card(html, 1)
    assert "wf-step--invalid" in second and "unknown step &#x27;sumary&#x27;" in second and "prompt:" in second
    assert '<span class="wf-missing">sumary (no such step)</span>' in second
    assert "unknown step" not in step_card(html, 0)
    # Drawn after the first step, not beside it as if they could run at the same time.
    assert "Stage 2" in html and "run at the same time" not in html
    # And in the summary at the top, linking to the step.
    assert 'href="#step-1">Step 2</a> · prompt: unknown step' in html
    assert "Not saved: 1 problem in the definition." in html
    assert "{{ steps.sumary.output }}" in html  # the text is kept in the editor to be fixed
    assert workflows_in(organization) == []
    with organization_schema(organization):
        assert not AuditEvent.objects.filter(action="workflow.created").exists()


def test_depends_on_a_step_that_does_not_exist_is_shown_at_its_step(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    one = {"name": "one", "type": "transform", "template": "x"}
    two: dict[str, Any] = {"name": "two", "type": "transform", "template": "y", "depends_on": ["one", "three"]}
    ask = {"name": "ask", "type": "llm", "model": "no-such-model", "prompt": "hi"}
    definition = {"steps": [one, two, ask]}
    refused = client.post("/workflows/new/", {"name": "deps", "format": "json", "definition": json.dumps(definition)})
    assert refused.status_code == 400
    html = text(refused)
    assert "depends_on:</strong> unknown step &#x27;three&#x27;" in step_card(html, 1)
    assert workflows_in(organization) == []
    # The catalog check (a model that doesn't exist) is the service's and lands at its step too.
    fixed = {"steps": [one, {**two, "depends_on": "one"}, ask]}
    refused = client.post("/workflows/new/", {"name": "deps", "format": "json", "definition": json.dumps(fixed)})
    assert refused.status_code == 400
    assert "unknown model &#x27;no-such-model&#x27;" in step_card(text(refused), 2)
    assert workflows_in(organization) == []


def test_a_yaml_alias_bomb_is_refused_before_it_expands(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    refused = client.post("/workflows/new/", {"name": "bomb", "format": "yaml", "definition": BOMB})
    assert refused.status_code == 400
    assert "YAML aliases (*a) are not allowed at line 2" in text(refused)
    assert workflows_in(organization) == []
    too_big = client.post("/workflows/new/", {"name": "big", "format": "yaml", "definition": "#" * 300_000})
    assert too_big.status_code == 400 and workflows_in(organization) == []


def test_too_many_steps_are_refused_and_drawn_only_up_to_the_limit(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    # A chain of 3,000 steps, each after the one before: refused, and drawing it stays cheap.
    steps = [
        {"name": f"s{n}", "type": "transform", "template": f"{{{{ steps.s{n - 1}.output }}}}"} for n in range(3000)
    ]
    steps[0]["template"] = "start"
    refused = client.post(
        "/workflows/new/", {"name": "long", "format": "json", "definition": json.dumps({"steps": steps})}
    )
    assert refused.status_code == 400
    html = text(refused)
    assert "at most 100 steps" in html and 'id="step-99"' in html and 'id="step-100"' not in html
    assert workflows_in(organization) == []


def test_a_name_already_taken_is_said_at_the_name(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    make_workflow(organization, "taken")
    client, _ = signed_in(client_for, organization)
    refused = client.post("/workflows/new/", {"name": "taken", "format": "yaml", "definition": EXAMPLE_YAML})
    assert refused.status_code == 400
    assert "A workflow named “taken” already exists" in text(refused)
    assert workflows_in(organization) == ["taken"]


def test_a_new_version_is_saved_and_the_old_one_can_still_be_seen(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    client, _ = signed_in(client_for, organization)
    editor = client.get(f"/workflows/{workflow.pk}/edit/")
    assert editor.status_code == 200 and "Starting from version 1" in text(editor)
    assert "name: summary" in text(editor)  # the stored definition, as YAML, name first
    changed = EXAMPLE_YAML.replace("Translate to French", "Translate to German")
    refused = client.post(f"/workflows/{workflow.pk}/edit/", {"format": "yaml", "definition": MISSPELLED})
    assert refused.status_code == 400 and "sumary" in step_card(text(refused), 1)
    saved = client.post(f"/workflows/{workflow.pk}/edit/", {"format": "yaml", "definition": changed})
    assert saved.status_code == 302
    with organization_schema(organization):
        assert workflow_latest_version(workflow=workflow).number == 2
    detail = text(client.get(f"/workflows/{workflow.pk}/"))
    assert "Saved version 2 of example." in detail
    assert f'href="/workflows/{workflow.pk}/versions/1/"' in detail and "latest" in detail
    old = client.get(f"/workflows/{workflow.pk}/versions/1/")
    assert old.status_code == 200
    assert "Translate to French" in text(old) and "An earlier version" in text(old)
    assert "Translate to German" in text(client.get(f"/workflows/{workflow.pk}/versions/2/"))
    assert "&quot;name&quot;: &quot;summary&quot;" in text(
        client.get(f"/workflows/{workflow.pk}/versions/1/?format=json")
    )
    assert client.get(f"/workflows/{workflow.pk}/versions/9/").status_code == 404
    from_old = client.get(f"/workflows/{workflow.pk}/edit/?from=1")
    assert "Starting from version 1" in text(from_old) and "Translate to French" in text(from_old)


# -- the cost preview and starting a run ----------------------------------------------------------------------


def test_the_preview_shows_what_workflow_cost_preview_computes(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization, definition=EXAMPLE_YAML)
    client, user = signed_in(client_for, organization)
    page = client.get(f"/workflows/{workflow.pk}/start/")
    assert page.status_code == 200
    html = text(page)
    principal = Principal.for_user(user)
    with organization_schema(organization):
        definition = definition_of(version=workflow_latest_version(workflow=workflow))
        expected = workflow_cost_preview(principal=principal, definition=definition, organization=organization)
    assert f'id="preview-expected">${expected["expected_usd"]}<' in html
    assert f'id="preview-worst">${expected["worst_case_usd"]}<' in html
    for step in expected["steps"]:
        assert f"${step['expected_usd']}" in html and f"${step['worst_case_usd']}" in html
    assert Decimal(expected["worst_case_usd"]) > Decimal(expected["expected_usd"]) > 0
    first = expected["steps"][0]["expected_tokens"]
    assert f"{first['input']} in / {first['output']} out tokens" in html and "dict_items" not in html
    # With the input typed, the preview sizes the prompt with it.
    long_text = "word " * 2000
    updated = client.post(f"/workflows/{workflow.pk}/start/", {"version": "1", "input_text": long_text})
    assert updated.status_code == 200
    with organization_schema(organization):
        sized = workflow_cost_preview(
            principal=principal, definition=definition, data={"text": long_text}, organization=organization
        )
    assert f'id="preview-expected">${sized["expected_usd"]}<' in text(updated)
    assert sized["expected_usd"] != expected["expected_usd"]
    assert '<label for="input-text">text</label>' in text(updated)
    with organization_schema(organization):
        assert not WorkflowRun.objects.exists()  # a preview starts nothing


def test_the_preview_weighs_expected_and_worst_case_against_the_budgets_left(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization, definition=EXAMPLE_YAML)
    client, user = signed_in(client_for, organization)
    with organization_schema(organization):
        daily = Budget.objects.create(scope="organization", period="day", limit_usd=Decimal(1))
        BudgetWindow.objects.create(budget=daily, period_start=timezone.now().date(), spent_usd=Decimal("0.5"))
        Budget.objects.create(scope="user", scope_id=str(user.pk), period="month", limit_usd=Decimal(100), hard=False)
        definition = definition_of(version=workflow_latest_version(workflow=workflow))
        expected = workflow_cost_preview(
            principal=Principal.for_user(user), definition=definition, organization=organization
        )
    assert expected["fits"] == {"expected": True, "worst_case": False}
    html = text(client.get(f"/workflows/{workflow.pk}/start/"))
    assert "The expected cost fits the hard budgets, the worst case does not" in html
    for budget in expected["budgets"]:
        assert f"<strong>${budget['remaining_usd']}</strong>" in html
    assert "organization · day" in html and "user · month" in html
    assert html.count('<span class="badge badge--warn">hard</span>') == 1


def test_the_preview_of_a_map_counts_its_items_from_the_input(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    definition = {
        "inputs": ["words"],
        "steps": [
            {
                "name": "define",
                "type": "map",
                "items": "{{ input.words }}",
                "step": {"type": "llm", "model": "gpt-4o-mini", "prompt": "Define {{ item }}"},
            }
        ],
    }
    workflow = make_workflow(organization, "mapper", definition)
    client, _ = signed_in(client_for, organization)
    page = text(client.get(f"/workflows/{workflow.pk}/start/"))
    assert "over 1 item<" not in page  # without the input the preview can't count them
    assert "of llm" in page  # the drawn step says what it runs per item
    loose = make_workflow(organization, "loose", {**definition, "inputs": None})
    with_input = text(client.post(f"/workflows/{loose.pk}/start/", {"input_json": '{"words": ["a", "b", "c"]}'}))
    assert "over 3 items" in with_input
    # A declared input typed as a JSON list is a list (what the map goes through); text stays text.
    declared = text(client.post(f"/workflows/{workflow.pk}/start/", {"input_words": '["a", "b"]'}))
    assert "over 2 items" in declared
    started = client.post(f"/workflows/{workflow.pk}/run/", {"input_words": '["a", "b"]'})
    assert started.status_code == 302
    client.post(f"/workflows/{workflow.pk}/run/", {"input_words": "[draft] not JSON"})
    with organization_schema(organization):
        inputs = [run.input["words"] for run in WorkflowRun.objects.filter(workflow=workflow).order_by("created_at")]
    assert inputs == [["a", "b"], "[draft] not JSON"]


def test_a_run_is_started_with_its_input_and_its_page_shows_the_steps(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization, definition=EXAMPLE_YAML)
    client, user = signed_in(client_for, organization)
    started = client.post(f"/workflows/{workflow.pk}/run/", {"version": "1", "input_text": "The cat sat."})
    assert started.status_code == 302
    with organization_schema(organization):
        run = WorkflowRun.objects.get()
        assert run.input == {"text": "The cat sat."} and run.principal_label == user.email
    assert started["Location"] == f"/workflows/runs/{run.pk}/"
    page = client.get(started["Location"])
    html = text(page)
    assert page.status_code == 200
    assert 'data-step="summary" data-status="pending"' in html and 'data-step="french" data-status="pending"' in html
    assert f'data-run-events="/workflows/runs/{run.pk}/events/"' in html and 'data-finished="false"' in html
    assert "The cat sat." in html and "Cancel run" in html
    # The live fragment follows the steps; once the run has ended it stops asking to be polled.
    with organization_schema(organization):
        StepRun.objects.filter(run=run, name="summary").update(
            status=StepStatus.SUCCEEDED, output="A cat.", started_at=run.created_at, finished_at=timezone.now()
        )
    live = text(client.get(f"/workflows/runs/{run.pk}/live/"))
    assert 'data-step="summary" data-status="succeeded"' in live and "A cat." in live
    assert 'data-finished="false"' in live
    with organization_schema(organization):
        StepRun.objects.filter(run=run, name="french").update(
            status=StepStatus.SUCCEEDED, output="Un chat.", finished_at=timezone.now()
        )
        WorkflowRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED, output="Un chat.", finished_at=timezone.now()
        )
    ended = text(client.get(f"/workflows/runs/{run.pk}/live/"))
    assert 'data-finished="true"' in ended and "Un chat." in ended and "Cancel run" not in ended
    # The events stream sends the same part, rendered, and ends with the run.
    events = client.get(f"/workflows/runs/{run.pk}/events/")
    assert events.status_code == 200 and events["Content-Type"] == "text/event-stream"
    stream = b"".join(events.streaming_content).decode()  # type: ignore[attr-defined]
    assert stream.startswith("event: live\n")
    data = json.loads(stream.split("data: ", 1)[1])
    assert data["status"] == "succeeded" and data["finished"] is True
    assert 'data-step="french" data-status="succeeded"' in data["html"] and "Un chat." in data["html"]


def test_the_events_stream_carries_the_cancel_form_with_its_csrf_token(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    run = make_run(organization, workflow)
    client, _ = signed_in(client_for, organization)
    client.get(f"/workflows/runs/{run.pk}/")  # the page sets the CSRF cookie
    fail_second_step(organization, run)  # ended: the stream ends after its first event
    stream = b"".join(client.get(f"/workflows/runs/{run.pk}/events/").streaming_content).decode()  # type: ignore[attr-defined]
    html = json.loads(stream.split("data: ", 1)[1])["html"]
    assert "Re-run from the failed step" in html and 'name="csrfmiddlewaretoken" value="' in html
    assert 'name="csrfmiddlewaretoken" value=""' not in html


def test_a_definition_without_declared_inputs_takes_a_json_object(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)  # the docs' example: `inputs: [text]` declared
    assert input_names(definition_parse(EXAMPLE)) == (["text"], True)
    client, _ = signed_in(client_for, organization)
    undeclared = {"steps": [{"name": "echo", "type": "transform", "template": "{{ input.words }}"}]}
    loose = make_workflow(organization, "loose", undeclared)
    page = text(client.get(f"/workflows/{loose.pk}/start/"))
    assert '<label for="input-json">Input (a JSON object)</label>' in page and "input.words" in page
    bad = client.post(f"/workflows/{loose.pk}/run/", {"input_json": "[1, 2"})
    assert bad.status_code == 400 and "Not valid JSON at line 1" in text(bad)
    not_object = client.post(f"/workflows/{loose.pk}/run/", {"input_json": "[1, 2]"})
    assert not_object.status_code == 400 and "Give a JSON object" in text(not_object)
    ok = client.post(f"/workflows/{loose.pk}/run/", {"input_json": '{"words": ["a", "b"]}'})
    assert ok.status_code == 302
    with organization_schema(organization):
        assert WorkflowRun.objects.get(workflow=loose).input == {"words": ["a", "b"]}
        assert not WorkflowRun.objects.filter(workflow=workflow).exists()


def test_a_run_is_cancelled_from_its_page(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    run = make_run(organization, workflow)
    client, user = signed_in(client_for, organization)
    cancelled = client.post(f"/workflows/runs/{run.pk}/cancel/")
    assert cancelled.status_code == 302
    with organization_schema(organization):
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED and user.email in run.error_message
        assert set(StepRun.objects.filter(run=run).values_list("status", flat=True)) == {StepStatus.CANCELLED}
    page = text(client.get(f"/workflows/runs/{run.pk}/"))
    assert "Cancelled: no further step of this run will start." in page and "Cancel run" not in page
    again = client.post(f"/workflows/runs/{run.pk}/cancel/", follow=True)
    assert "Not cancelled: the run already ended (cancelled)" in text(again)


def fail_second_step(organization: Organization, run: WorkflowRun) -> None:
    """As a worker would leave it: summary succeeded, french failed, the run failed."""
    now = timezone.now()
    with organization_schema(organization):
        StepRun.objects.filter(run=run, name="summary").update(
            status=StepStatus.SUCCEEDED, output="A short summary.", started_at=now, finished_at=now
        )
        StepRun.objects.filter(run=run, name="french").update(
            status=StepStatus.FAILED,
            started_at=now,
            finished_at=now,
            error_class="provider_error",
            error_message="the provider answered 503",
        )
        WorkflowRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            started_at=now,
            finished_at=now,
            error_class="step_failed",
            error_message="step french failed",
        )


def test_a_failed_run_is_rerun_from_its_failed_step(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    run = make_run(organization, workflow)
    fail_second_step(organization, run)
    client, _ = signed_in(client_for, organization)
    page = text(client.get(f"/workflows/runs/{run.pk}/"))
    assert "provider_error" in page and "the provider answered 503" in page
    assert "Re-run from the failed step" in page and "Cancel run" not in page
    rerun = client.post(f"/workflows/runs/{run.pk}/rerun/")
    assert rerun.status_code == 302
    with organization_schema(organization):
        new = WorkflowRun.objects.get(rerun_of=run)
        steps = {step.name: step for step in StepRun.objects.filter(run=new)}
    assert rerun["Location"] == f"/workflows/runs/{new.pk}/"
    assert steps["summary"].reused and steps["summary"].output == "A short summary."
    assert steps["french"].status == StepStatus.QUEUED and not steps["french"].reused
    new_page = text(client.get(rerun["Location"]))
    assert "kept from the earlier run" in new_page and "A short summary." in new_page
    # A run that didn't fail is not offered a re-run, and a posted one is refused.
    assert "Re-run from the failed step" not in new_page
    refused = client.post(f"/workflows/runs/{new.pk}/rerun/", follow=True)
    assert "Not re-run: only a failed run" in text(refused)


def test_outputs_deleted_by_the_content_policy_say_so(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    run = make_run(organization, workflow)
    fail_second_step(organization, run)
    with organization_schema(organization):
        now = timezone.now()
        WorkflowRun.objects.filter(pk=run.pk).update(input={}, content_deleted_at=now)
        StepRun.objects.filter(run=run).update(output=None, content_deleted_at=now)
    client, _ = signed_in(client_for, organization)
    page = text(client.get(f"/workflows/runs/{run.pk}/"))
    assert "Output not kept (the organization's content policy)." in page
    assert "A short summary." not in page and "Re-run from the failed step" not in page


# -- lists ------------------------------------------------------------------------------------------------------


def test_the_list_shows_latest_version_and_last_run_with_queries_constant(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)

    def count() -> tuple[int, str]:
        client.get("/workflows/")  # warm the session and permission caches
        with CaptureQueriesContext(connection) as queries:
            page = client.get("/workflows/")
        assert page.status_code == 200
        return len(queries), text(page)

    first = make_workflow(organization, "alpha")
    make_run(organization, first)
    few, _ = count()
    with organization_schema(organization):
        for n in range(6):
            workflow = workflow_make(organization, EXAMPLE, name=f"wf {n}")
            run_start(organization=organization, principal=KEY, workflow=workflow, input={"text": "x"})
        from apps.workflows.definitions import workflow_update

        workflow_update(organization=organization, actor=KEY, workflow=first, definition=EXAMPLE)
    many, html = count()
    assert many == few
    row = re.search(
        r"<tr>\s*<td data-label=\"Name\"><a href=\"[^\"]+\"><strong[^>]*>alpha</strong>.*?</tr>", html, re.S
    )
    assert row and "v2" in row.group(0) and "wf-status--queued" in row.group(0)


def test_runs_lists_filter_by_status_with_queries_constant(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    other = make_workflow(organization, "other")
    failed = make_run(organization, workflow)
    fail_second_step(organization, failed)
    make_run(organization, other)
    client, _ = signed_in(client_for, organization)

    def count(url: str) -> tuple[int, str]:
        client.get(url)
        with CaptureQueriesContext(connection) as queries:
            page = client.get(url)
        assert page.status_code == 200
        return len(queries), text(page)

    few, html = count("/workflows/runs/")
    assert html.count('data-label="Run"') == 2
    only_failed = text(client.get("/workflows/runs/?status=failed"))
    assert only_failed.count('data-label="Run"') == 1 and f"/workflows/runs/{failed.pk}/" in only_failed
    per_workflow = text(client.get(f"/workflows/{other.pk}/"))
    assert per_workflow.count('data-label="Run"') == 1 and f"/workflows/runs/{failed.pk}/" not in per_workflow
    assert "No succeeded runs." in text(client.get("/workflows/runs/?status=succeeded"))
    for _ in range(5):
        make_run(organization, workflow)
    many, _ = count("/workflows/runs/")
    assert many == few
    few_detail, _ = count(f"/workflows/{workflow.pk}/")
    for _ in range(3):
        make_run(organization, workflow)
    many_detail, _ = count(f"/workflows/{workflow.pk}/")
    assert many_detail == few_detail


def test_runs_come_in_pages(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    with organization_schema(organization):
        version = workflow_latest_version(workflow=workflow)
        WorkflowRun.objects.bulk_create(
            WorkflowRun(workflow=workflow, version=version, principal_kind="user", input={}) for _ in range(55)
        )
    client, _ = signed_in(client_for, organization)
    first = text(client.get("/workflows/runs/"))
    assert first.count('data-label="Run"') == 50
    link = re.search(r'href="\?([^"#]+)#runs-heading">Older runs', first)
    assert link
    second = text(client.get(f"/workflows/runs/?{link.group(1).replace('&amp;', '&')}"))
    assert second.count('data-label="Run"') == 5 and "Newest runs" in second


# -- organizations and roles ----------------------------------------------------------------------------------


def test_another_organizations_workflows_and_runs_are_404(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    mine, theirs = two_tenants
    workflow = make_workflow(theirs, "secret plan")
    run = make_run(theirs, workflow)
    client, _ = signed_in(client_for, mine, "owner")
    assert "secret plan" not in text(client.get("/workflows/"))
    assert str(run.pk)[:8] not in text(client.get("/workflows/runs/"))
    for url in (
        f"/workflows/{workflow.pk}/",
        f"/workflows/{workflow.pk}/edit/",
        f"/workflows/{workflow.pk}/start/",
        f"/workflows/{workflow.pk}/versions/1/",
        f"/workflows/runs/{run.pk}/",
        f"/workflows/runs/{run.pk}/live/",
        f"/workflows/runs/{run.pk}/events/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/workflows/{workflow.pk}/run/", {"input_text": "x"}).status_code == 404
    assert (
        client.post(f"/workflows/{workflow.pk}/edit/", {"format": "yaml", "definition": EXAMPLE_YAML}).status_code
        == 404
    )
    assert client.post(f"/workflows/runs/{run.pk}/cancel/").status_code == 404
    with organization_schema(theirs):
        run.refresh_from_db()
        assert run.status == RunStatus.QUEUED and workflow_latest_version(workflow=workflow).number == 1


@pytest.mark.parametrize(
    ("role", "reads", "writes"),
    [
        ("owner", True, True),
        ("admin", True, True),
        ("developer", True, True),
        ("billing", True, False),
        ("viewer", True, False),
    ],
)
def test_each_role_sees_and_changes_what_its_permissions_allow(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str, reads: bool, writes: bool
) -> None:
    organization = two_tenants[0]
    workflow = make_workflow(organization)
    run = make_run(organization, workflow)
    fail_second_step(organization, run)
    queued = make_run(organization, workflow)
    client, _ = signed_in(client_for, organization, role)
    listing = client.get("/workflows/")
    assert listing.status_code == (200 if reads else 403)
    assert ('href="/workflows/"' in text(client.get("/"))) is reads  # in the navigation
    assert ("New workflow" in text(listing)) is writes
    detail = text(client.get(f"/workflows/{workflow.pk}/"))
    assert ("New version" in detail) is writes and ("Start a run" in detail) is writes
    assert "Preview a run's cost" in detail or writes
    start = client.get(f"/workflows/{workflow.pk}/start/")
    assert start.status_code == 200 and ("Start run" in text(start)) is writes  # everyone previews
    assert client.post(f"/workflows/{workflow.pk}/start/", {"input_text": "x"}).status_code == 200
    assert ("Re-run from the failed step" in text(client.get(f"/workflows/runs/{run.pk}/"))) is writes
    assert ("Cancel run" in text(client.get(f"/workflows/runs/{queued.pk}/"))) is writes
    if writes:
        return
    assert client.get("/workflows/new/").status_code == 403
    assert client.get(f"/workflows/{workflow.pk}/edit/").status_code == 403
    posts = [
        ("/workflows/new/", {"name": "nope", "format": "yaml", "definition": EXAMPLE_YAML}),
        (f"/workflows/{workflow.pk}/edit/", {"format": "yaml", "definition": EXAMPLE_YAML}),
        (f"/workflows/{workflow.pk}/run/", {"input_text": "x"}),
        (f"/workflows/runs/{queued.pk}/cancel/", {}),
        (f"/workflows/runs/{run.pk}/rerun/", {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    with organization_schema(organization):
        assert WorkflowRun.objects.count() == 2 and Workflow.objects.count() == 1
        queued.refresh_from_db()
        assert queued.status == RunStatus.QUEUED


def test_signed_out_is_sent_to_sign_in(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    client = client_for(f"{two_tenants[0].slug}.localhost")
    answer = client.get("/workflows/")
    assert answer.status_code == 302 and "/accounts/login/" in answer["Location"]
