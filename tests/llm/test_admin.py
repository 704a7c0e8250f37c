from __future__ import annotations

from decimal import Decimal

from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.apikeys.services import apikey_create
from apps.audit.models import AuditEvent
from apps.llm.platform.models import CatalogModel, ModelPrice
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, operator_admin_client


def test_operators_add_a_price_version_in_the_admin(db: None) -> None:
    operator = User.objects.create_superuser(email="ops@example.com", password="a-long-password-1")
    client = operator_admin_client(operator)
    model = CatalogModel.objects.get(name="gpt-4o-mini")
    page = client.get(f"/admin/llm_platform/catalogmodel/{model.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(
        capabilities='["tools"]',
        fallbacks='["claude-haiku-4-5"]',
        is_active="on",
        **{
            "prices-TOTAL_FORMS": "2",
            "prices-INITIAL_FORMS": "1",
            "prices-MIN_NUM_FORMS": "0",
            "prices-MAX_NUM_FORMS": "1000",
            "prices-0-id": str(ModelPrice.objects.get(model=model).pk),
            "prices-0-model": str(model.pk),
            "prices-1-model": str(model.pk),
            "prices-1-input_per_mtok": "0.20",
            "prices-1-cached_input_per_mtok": "0.10",
            "prices-1-output_per_mtok": "0.80",
        },
    )
    response = client.post(f"/admin/llm_platform/catalogmodel/{model.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    versions = list(ModelPrice.objects.filter(model=model).order_by("version").values_list("version", "input_per_mtok"))
    assert versions == [(1, Decimal("0.150000")), (2, Decimal("0.200000"))]


def test_operators_revoke_keys_from_the_admin_and_it_is_audited(two_tenants: tuple[Organization, Organization]) -> None:
    issued = apikey_create(organization=two_tenants[0], name="leaked", actor=TEST_ACTOR)
    operator = User.objects.create_superuser(email="ops2@example.com", password="a-long-password-1")
    client = operator_admin_client(operator)
    response = client.post("/admin/apikeys/apikey/", {"action": "revoke", "_selected_action": [issued.api_key.pk]})
    assert response.status_code == 302
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None
    with schema_context(two_tenants[0].schema_name):
        event = AuditEvent.objects.get(action="apikey.revoked")
        assert event.actor_label == "ops2@example.com" and event.actor_kind == "operator"
    assert issued.key not in client.get(f"/admin/apikeys/apikey/{issued.api_key.pk}/change/").content.decode()
