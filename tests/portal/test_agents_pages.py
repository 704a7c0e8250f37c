"""The portal's agents pages: list, create, edit, delete after confirming — validated as the REST API
validates agents (errors at their field, a duplicate name at the name), per organization and role,
with a constant number of queries per list page."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import User
from apps.agents.models import Agent
from apps.audit.models import AuditEvent
from apps.jobs.models import Job
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import member_make
from tests.knowledge.factories import knowledge_base_make
from tests.portal.conftest import ClientFor

WRITERS = ("owner", "admin", "developer")
READERS = ("viewer", "billing")

GOOD = {
    "name": "summarizer",
    "description": "Short summaries",
    "system_prompt": "Summarize in one sentence.",
    "model": "simulated-mini",
    "policy": "",
    "min_quality": "1",
    "temperature": "0.3",
    "max_tokens": "200",
    "max_cost_usd": "0.05",
    "retrieval_top_k": "4",
}


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def agent_make(organization: Organization, name: str = "helper", **fields: Any) -> Agent:
    with organization_schema(organization):
        return Agent.objects.create(name=name, model=fields.pop("model", "simulated-mini"), **fields)


def agent_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="agent-([0-9a-f-]{36})"', html)


def field_error(html: str, field: str) -> str:
    found = re.search(rf'<p class="field__error" id="id_{field}_error">([^<]*)</p>', html)
    return found.group(1) if found else ""


def test_a_developer_creates_an_agent_and_sees_it_listed(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization, "developer")
    empty = client.get("/agents/").content.decode()
    assert "Create an agent" in empty and 'href="/agents/new/"' in empty
    form = client.get("/agents/new/").content.decode()
    for name in GOOD:
        assert f'<label for="id_{name}">' in form
    response = client.post("/agents/new/", GOOD)
    assert response.status_code == 302 and response["Location"] == "/agents/"
    with organization_schema(organization):
        agent = Agent.objects.get()
        assert AuditEvent.objects.filter(action="agent.created", actor_label=user.email).exists()
    assert agent.name == "summarizer" and agent.temperature == 0.3 and agent.max_tokens == 200
    assert agent.max_cost_usd == Decimal("0.05") and agent.created_by_label == user.email
    listed = client.get("/agents/").content.decode()
    assert "Agent “summarizer” created." in listed and agent_ids(listed) == [str(agent.pk)]
    assert "Edit summarizer" in listed and "Delete summarizer" in listed


def test_a_policy_agent_without_sampling_keeps_its_defaults(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    posted = {**GOOD, "model": "", "policy": "cheapest", "temperature": "", "max_tokens": "", "max_cost_usd": ""}
    assert client.post("/agents/new/", posted).status_code == 302
    with organization_schema(organization):
        agent = Agent.objects.get()
    assert agent.policy == "cheapest" and agent.model == ""
    assert agent.temperature is None and agent.max_tokens is None and agent.max_cost_usd is None


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": ""}, "name", "may not be blank"),
        ({"name": "x" * 101}, "name", "no more than 100 characters"),
        ({"model": ""}, "model", "`model` or a routing `policy`"),
        ({"policy": "cheapest"}, "model", "`model` or a routing `policy`"),
        ({"policy": "priciest"}, "policy", "not a valid choice"),
        ({"temperature": "2.5"}, "temperature", "less than or equal to 2"),
        ({"min_quality": "9"}, "min_quality", "less than or equal to 5"),
        ({"max_tokens": "-1"}, "max_tokens", "greater than or equal to 0"),
        ({"max_cost_usd": "lots"}, "max_cost_usd", "valid number"),
        ({"system_prompt": "x" * 20_001}, "system_prompt", "At most 20,000 characters"),
    ],
)
def test_bad_input_answers_400_with_the_message_at_the_field_and_saves_nothing(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    changes: dict[str, str],
    field: str,
    message: str,
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    response = client.post("/agents/new/", {**GOOD, **changes})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in field_error(html, field), html
    assert 'value="simulated-mini"' in html or changes.get("model") == ""  # what was typed is kept
    with organization_schema(organization):
        assert not Agent.objects.exists()


def test_a_duplicate_name_is_said_at_the_name_field(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    agent_make(organization, name="summarizer")
    other = agent_make(organization, name="translator")
    client, _ = signed_in(client_for, organization, "developer")
    created = client.post("/agents/new/", GOOD)
    assert created.status_code == 400 and "already exists" in field_error(created.content.decode(), "name")
    renamed = client.post(f"/agents/{other.pk}/", {**GOOD, "name": "summarizer"})
    assert renamed.status_code == 400 and "already exists" in field_error(renamed.content.decode(), "name")
    with organization_schema(organization):
        assert sorted(Agent.objects.values_list("name", flat=True)) == ["summarizer", "translator"]


def test_an_edit_changes_what_was_sent_and_the_knowledge_bases_checked(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization, other_organization = two_tenants
    with organization_schema(organization):
        handbook, faq = knowledge_base_make(name="Handbook"), knowledge_base_make(name="FAQ <b>")
    with organization_schema(other_organization):
        knowledge_base_make(name="Their secrets")
    agent = agent_make(organization, name="helper", temperature=0.9)
    with organization_schema(organization):
        agent.knowledge_bases.set([handbook])
    client, user = signed_in(client_for, organization, "developer")
    page = client.get(f"/agents/{agent.pk}/").content.decode()
    assert "Edit agent" in page and 'value="helper"' in page and 'value="0.9"' in page
    # The organization's knowledge bases as checkboxes, the agent's checked; no other organization's.
    assert re.search(rf'value="{handbook.pk}"\s+checked', page) and f'value="{faq.pk}">' in page
    assert "FAQ &lt;b&gt;" in page and "Their secrets" not in page
    response = client.post(
        f"/agents/{agent.pk}/",
        {
            **GOOD,
            "name": "helper 2",
            "temperature": "",
            "model": "",
            "policy": "fastest",
            "knowledge_base_ids": [str(faq.pk)],
        },
    )
    assert response.status_code == 302
    with organization_schema(organization):
        agent.refresh_from_db()
        event = AuditEvent.objects.get(action="agent.updated")
        assert list(agent.knowledge_bases.all()) == [faq]
    assert agent.name == "helper 2" and agent.temperature is None and agent.policy == "fastest" and agent.model == ""
    assert event.actor_label == user.email
    listed = client.get("/agents/").content.decode()
    assert "Agent “helper 2” saved." in listed and "1 knowledge base<" in listed
    # No box checked: no knowledge bases.
    cleared = client.post(f"/agents/{agent.pk}/", {**GOOD, "name": "helper 2"})
    assert cleared.status_code == 302, re.findall(r'class="field__error"[^>]*>([^<]*)<', cleared.content.decode())
    with organization_schema(organization):
        assert not agent.knowledge_bases.exists()


def test_delete_asks_first_and_the_agents_jobs_stay(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    agent = agent_make(organization, name="old one")
    with organization_schema(organization):
        job = Job.objects.create(request={"model": "simulated-mini"}, agent=agent, principal_kind="user")
    client, _ = signed_in(client_for, organization, "admin")
    confirm = client.get(f"/agents/{agent.pk}/delete/")
    html = confirm.content.decode()
    assert (
        confirm.status_code == 200
        and 'Delete agent <span class="wrap-anywhere">“old one”</span>?' in html
        and "Its 1 job stays" in html
    )
    with organization_schema(organization):
        assert Agent.objects.filter(pk=agent.pk).exists()  # asking deletes nothing
    response = client.post(f"/agents/{agent.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/agents/"
    with organization_schema(organization):
        assert not Agent.objects.exists()
        job.refresh_from_db()
        assert AuditEvent.objects.filter(action="agent.deleted").exists()
    assert job.agent_id is None
    assert "Agent “old one” deleted." in client.get("/agents/").content.decode()


def test_the_list_comes_in_keyset_pages_with_constant_queries(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")

    def queries() -> int:
        client.get("/agents/")
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/agents/").status_code == 200
        return len(captured)

    agent_make(organization, name="agent 00")
    few = queries()
    with organization_schema(organization):
        Agent.objects.bulk_create(Agent(name=f"agent {n:02d}", model="simulated-mini") for n in range(1, 60))
    assert queries() == few
    first = client.get("/agents/").content.decode()
    assert len(agent_ids(first)) == 50
    older = re.search(r'href="\?([^"#]+)#agents-heading">Older agents', first)
    assert older is not None
    second = client.get("/agents/?" + older.group(1).replace("&amp;", "&")).content.decode()
    assert len(agent_ids(second)) == 10 and not set(agent_ids(first)) & set(agent_ids(second))


def test_another_organizations_agent_is_not_found(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    theirs = agent_make(two_tenants[1], name="theirs")
    client, _ = signed_in(client_for, two_tenants[0], "owner")
    assert client.get(f"/agents/{theirs.pk}/").status_code == 404
    assert client.post(f"/agents/{theirs.pk}/", {**GOOD, "name": "stolen"}).status_code == 404
    assert client.get(f"/agents/{theirs.pk}/delete/").status_code == 404
    assert client.post(f"/agents/{theirs.pk}/delete/").status_code == 404
    assert agent_ids(client.get("/agents/").content.decode()) == []
    # A job can't name it either.
    submitted = client.post("/jobs/new/", {"agent": str(theirs.pk), "prompt": "hi"})
    assert submitted.status_code == 400
    with organization_schema(two_tenants[1]):
        theirs.refresh_from_db()
    assert theirs.name == "theirs"


@pytest.mark.parametrize("role", WRITERS + READERS)
def test_each_role_sees_agents_and_only_writers_may_change_them(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    organization = two_tenants[0]
    agent = agent_make(organization, name="shared", system_prompt="Be <b>kind</b>.")
    client, _ = signed_in(client_for, organization, role)
    listed = client.get("/agents/")
    page = client.get(f"/agents/{agent.pk}/")
    assert listed.status_code == 200 and page.status_code == 200
    listed_html, page_html = listed.content.decode(), page.content.decode()
    assert agent_ids(listed_html) == [str(agent.pk)] and "Be &lt;b&gt;kind&lt;/b&gt;." in page_html
    writer = role in WRITERS
    assert ("Create an agent" in listed_html) is writer and ("Edit shared" in listed_html) is writer
    assert ("<form" in page_html.split('id="agent-form-heading"')[1]) is writer
    assert ("Delete agent" in page_html) is writer
    assert client.get("/agents/new/").status_code == (200 if writer else 403)
    assert client.get(f"/agents/{agent.pk}/delete/").status_code == (200 if writer else 403)
    if not writer:
        assert client.post("/agents/new/", GOOD).status_code == 403
        assert client.post(f"/agents/{agent.pk}/", {**GOOD, "name": "renamed"}).status_code == 403
        assert client.post(f"/agents/{agent.pk}/delete/").status_code == 403
        with organization_schema(organization):
            assert list(Agent.objects.values_list("name", flat=True)) == ["shared"]
