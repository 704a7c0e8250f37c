from __future__ import annotations

from decimal import Decimal

from django.test import Client

from apps.accounts.models import User
from apps.llm.platform.models import CatalogModel, ModelPrice


def test_operators_add_a_price_version_in_the_admin(db: None) -> None:
    operator = User.objects.create_superuser(email="ops@example.com", password="a-long-password-1")
    client = Client(HTTP_HOST="localhost")
    client.force_login(operator)
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
