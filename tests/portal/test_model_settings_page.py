"""The portal's Model settings page: allowed models and default policy, the semantic cache and its
threshold, the content policy and retention; bounds answered 400 at the field with nothing
changed; audited; per role and per organization."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.llm.selectors import EngineSettings, llm_settings_forget, llm_settings_get
from apps.llm.services import llm_settings_set
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor

VALID = {
    "allowed_models": ["simulated-mini"],
    "default_policy": "cheapest",
    "semantic_cache": "on",
    "semantic_threshold": "0.9",
    "store_content": "on",
    "retention_days": "14",
}


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def settings_of(organization: Organization) -> EngineSettings:
    llm_settings_forget()
    return llm_settings_get(organization=organization)


def test_an_admin_changes_every_model_setting_and_it_is_audited(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, admin = signed_in(client_for, organization, "admin")
    page = client.get("/settings/models/")
    assert page.status_code == 200
    html = page.content.decode()
    for label in ("Default policy", "Semantic similarity threshold", "Retention (days)"):
        assert f">{label}</label>" in html
    assert 'value="simulated-mini"' in html and 'value="simulated-pro"' in html
    assert 'value="0.95"' in html and 'value="30"' in html  # today's values

    saved = client.post("/settings/models/", VALID, follow=True)
    assert saved.status_code == 200 and b"Model settings saved" in saved.content
    found = settings_of(organization)
    assert found.allowed_models == frozenset({"simulated-mini"}) and found.default_policy == "cheapest"
    assert found.semantic_cache and found.semantic_threshold == 0.9
    assert found.store_content and found.retention_days == 14
    ticked = re.search(r'<input[^>]*value="simulated-mini"[^>]*>', saved.content.decode())
    assert ticked is not None and "checked" in ticked.group(0)

    # Content off: no prompt or answer is kept; every model allowed again (none ticked).
    client.post("/settings/models/", {"default_policy": "", "semantic_threshold": "0.95", "retention_days": "14"})
    found = settings_of(organization)
    assert not found.store_content and not found.semantic_cache and found.allowed_models == frozenset()
    assert "not stored anywhere" in client.get("/settings/models/").content.decode()
    with organization_schema(organization):
        events = list(AuditEvent.objects.filter(action="llm_settings.changed", actor_label=admin.email).order_by("id"))
    assert len(events) == 2
    assert events[0].metadata["after"]["allowed_models"] == ["simulated-mini"]
    assert events[0].metadata["after"]["default_policy"] == "cheapest"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"semantic_threshold": "0.5"}, "semantic_threshold", "greater than or equal to 0.8"),
        ({"semantic_threshold": "1.5"}, "semantic_threshold", "less than or equal to 1"),
        ({"semantic_threshold": "nan"}, "semantic_threshold", "number"),
        ({"retention_days": "0"}, "retention_days", "greater than or equal to 1"),
        ({"retention_days": "3651"}, "retention_days", "less than or equal to 3650"),
        ({"retention_days": ""}, "retention_days", "required"),
        ({"default_policy": "random"}, "default_policy", "valid choice"),
        ({"allowed_models": ["no-such-model"]}, "allowed_models", "valid choice"),
    ],
)
def test_bad_settings_are_answered_400_at_their_field_and_nothing_changes(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    change: dict[str, object],
    field: str,
    message: str,
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "owner")
    answer = client.post("/settings/models/", {**VALID, **change})
    assert answer.status_code == 400
    html = answer.content.decode()
    if field == "allowed_models":
        assert message in html.split('<fieldset class="field scopes field--invalid">', 1)[1].split("</fieldset>", 1)[0]
    else:
        error = html.split(f'id="id_{field}_error">', 1)[1].split("</p>", 1)[0]
        assert message in error
    found = settings_of(organization)
    assert found.retention_days == 30 and found.allowed_models == frozenset() and found.default_policy == ""


@pytest.mark.parametrize(("role", "allowed"), [("owner", True), ("admin", True), ("developer", False),
                                               ("billing", False), ("viewer", False)])  # fmt: skip
def test_only_security_managers_open_or_change_model_settings(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str, allowed: bool
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, role)
    assert ('href="/settings/models/"' in client.get("/").content.decode()) is allowed
    page = client.get("/settings/models/")
    posted = client.post("/settings/models/", VALID)
    if allowed:
        assert page.status_code == 200 and posted.status_code == 302
    else:
        assert page.status_code == 403 and posted.status_code == 403
        assert settings_of(organization).default_policy == ""


def test_one_organizations_settings_are_its_own(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization_a, organization_b = two_tenants
    llm_settings_set(organization=organization_a, actor=TEST_ACTOR, retention_days=7, allowed_models=["simulated-pro"])
    client_b, _ = signed_in(client_for, organization_b, "owner")
    page_b = client_b.get("/settings/models/").content.decode()
    assert 'value="30"' in page_b
    client_b.post("/settings/models/", {**VALID, "retention_days": "90"})
    assert settings_of(organization_a).retention_days == 7
    assert settings_of(organization_a).allowed_models == frozenset({"simulated-pro"})
    assert settings_of(organization_b).retention_days == 90
