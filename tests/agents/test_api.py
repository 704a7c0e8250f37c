from __future__ import annotations

from decimal import Decimal

from apps.agents.models import Agent
from apps.jobs.models import Job
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor
from tests.knowledge.factories import knowledge_base_make

AGENT = {"name": "support", "system_prompt": "Be brief.", "model": "simulated-mini", "temperature": 0.2}


def test_agents_are_created_read_changed_and_deleted_with_their_rules(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    created = client.post("/api/v1/agents", AGENT, format="json")
    assert created.status_code == 201, created.content
    agent = created.json()
    assert {key: agent[key] for key in AGENT} == AGENT
    assert agent["policy"] == "" and agent["min_quality"] == 1 and agent["knowledge_base_ids"] == []
    duplicate = client.post("/api/v1/agents", {"name": "support", "policy": "cheapest"}, format="json")
    assert duplicate.status_code == 400 and duplicate.json()["error"]["param"] == "name"
    both = client.post("/api/v1/agents", {"name": "both", "model": "x", "policy": "fastest"}, format="json")
    assert both.status_code == 400 and both.json()["error"]["param"] == "model"
    assert [a["name"] for a in client.get("/api/v1/agents").json()["results"]] == ["support"]
    patched = client.patch(f"/api/v1/agents/{agent['id']}", {"max_cost_usd": "0.5"}, format="json")
    assert patched.status_code == 200 and Decimal(patched.json()["max_cost_usd"]) == Decimal("0.5")
    assert client.get(f"/api/v1/agents/{agent['id']}").json()["max_cost_usd"] == patched.json()["max_cost_usd"]
    assert client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    assert client.get(f"/api/v1/agents/{agent['id']}").status_code == 404


def test_another_organization_neither_sees_nor_changes_an_agent_and_may_reuse_its_name(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    organization_a, organization_b = two_tenants
    client_a, client_b = api_client_for(organization_a), api_client_for(organization_b)
    agent = client_a.post("/api/v1/agents", AGENT, format="json").json()
    url = f"/api/v1/agents/{agent['id']}"
    assert client_b.get("/api/v1/agents").json()["results"] == []
    assert client_b.get(url).status_code == 404
    assert client_b.patch(url, {"system_prompt": "Leak."}, format="json").status_code == 404
    assert client_b.delete(url).status_code == 404
    # A job of B naming A's agent finds none.
    refused = client_b.post("/api/v1/jobs", {"prompt": "Hi", "agent": agent["id"]}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "agent_not_found"
    assert client_b.post("/api/v1/agents", {**AGENT, "system_prompt": "B's own."}, format="json").status_code == 201
    with organization_schema(organization_a):
        assert Agent.objects.get(pk=agent["id"]).system_prompt == "Be brief."
    with organization_schema(organization_b):
        assert Agent.objects.get(name="support").system_prompt == "B's own."


def test_a_job_takes_its_agents_defaults_by_name_or_id(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    agent = client.post("/api/v1/agents", AGENT, format="json").json()
    by_name = client.post("/api/v1/jobs", {"prompt": "Hi", "agent": "support"}, format="json").json()
    by_id = client.post("/api/v1/jobs", {"prompt": "Hi", "agent": agent["id"]}, format="json").json()
    with organization_schema(two_tenants[0]):
        for job in Job.objects.filter(pk__in=[by_name["id"], by_id["id"]]):
            assert job.request["messages"][0] == {"role": "system", "content": "Be brief."}
            assert job.request["model"] == "simulated-mini" and job.request["temperature"] == 0.2
            assert str(job.agent_id) == agent["id"]


def test_an_agent_names_knowledge_bases_of_its_own_organization_only(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    organization_a, organization_b = two_tenants
    with organization_schema(organization_a):
        handbook, faq = knowledge_base_make(name="Handbook"), knowledge_base_make(name="FAQ")
    with organization_schema(organization_b):
        theirs = knowledge_base_make(name="Handbook")
    client = api_client_for(organization_a)
    ids = [str(handbook.pk), str(faq.pk)]
    created = client.post("/api/v1/agents", {**AGENT, "knowledge_base_ids": ids}, format="json")
    assert created.status_code == 201, created.content
    agent = created.json()
    assert sorted(agent["knowledge_base_ids"]) == sorted(ids)
    url = f"/api/v1/agents/{agent['id']}"
    # Another organization's knowledge base does not exist here; nor does a malformed id.
    for wrong in ([str(theirs.pk)], ["not-a-uuid"], [1]):
        refused = client.patch(url, {"knowledge_base_ids": wrong}, format="json")
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "knowledge_base_ids", wrong
    with organization_schema(organization_a):
        many = [str(knowledge_base_make(name=f"Base {n}").pk) for n in range(6)]
    too_many = client.patch(url, {"knowledge_base_ids": many}, format="json")
    assert too_many.status_code == 400 and "at most 5" in str(too_many.json())
    # A PATCH without the field keeps them; an empty list clears them.
    assert sorted(client.patch(url, {"temperature": 0.5}, format="json").json()["knowledge_base_ids"]) == sorted(ids)
    assert client.patch(url, {"knowledge_base_ids": [str(faq.pk)]}, format="json").json()["knowledge_base_ids"] == [
        str(faq.pk)
    ]
    # Deleting a knowledge base drops it from its agents.
    with organization_schema(organization_a):
        faq.delete()
        assert list(Agent.objects.get(pk=agent["id"]).knowledge_bases.all()) == []
    assert client.patch(url, {"knowledge_base_ids": []}, format="json").json()["knowledge_base_ids"] == []
