"""An organization's own OpenAI-compatible key is named by its server: calls to the catalog's
compatible models at that base URL use it (paid by the organization), and it is never sent to a
compatible model at any other URL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django_tenants.utils import schema_context

from apps.llm.models import UsageAttempt
from apps.llm.platform.models import CatalogModel, ModelPrice, Provider
from apps.llm.platform.selectors import catalog_forget
from apps.llm.providers import OpenAIProvider, own_key_name, provider_for
from apps.llm.services import provider_credential_set, provider_own_keys
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR
from tests.llm.conftest import gateway_client
from tests.support.fake_provider import FakeProvider

OWN = "own-compatible-Secret-Token-0a1b"
HELLO: Any = [{"role": "user", "content": "Hello there"}]


def _compatible(name: str, base_url: str) -> CatalogModel:
    model = CatalogModel.objects.create(
        name=name,
        provider=Provider.OPENAI_COMPATIBLE,
        provider_model="llama-3",
        base_url=base_url,
        context_window=8192,
        max_output_tokens=1024,
        quality_tier=2,
    )
    ModelPrice.objects.create(
        model=model,
        version=1,
        input_per_mtok=Decimal("0.1"),
        cached_input_per_mtok=Decimal("0.1"),
        output_per_mtok=Decimal("0.2"),
    )
    return model


def test_an_own_compatible_key_serves_only_the_models_at_its_server(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider, settings: Any
) -> None:
    tenant_a, _ = two_tenants
    settings.OPENAI_COMPATIBLE_API_KEY = "platform-compatible-key"
    ours = _compatible("our-llama", fake_provider.openai_base_url + "/")
    # The same fake server under another name: another deployment as far as keys go.
    theirs = _compatible("their-llama", fake_provider.openai_base_url.replace("127.0.0.1", "localhost"))
    catalog_forget()
    provider_credential_set(
        organization=tenant_a,
        provider="openai_compatible",
        api_key=OWN,
        base_url=fake_provider.openai_base_url,
        actor=TEST_ACTOR,
    )
    own = provider_own_keys(organization=tenant_a)
    assert own == {own_key_name(ours): OWN} and own_key_name(theirs) not in own

    # The key each deployment's adapter would send.
    for model, expected in ((ours, OWN), (theirs, "platform-compatible-key")):
        adapter = provider_for(model, own.get(own_key_name(model)))
        assert isinstance(adapter, OpenAIProvider) and adapter.client.api_key == expected

    client = gateway_client(key_a)
    assert client.chat.completions.create(model="our-llama", messages=HELLO).model == "our-llama"
    assert client.chat.completions.create(model="their-llama", messages=HELLO).model == "their-llama"
    with schema_context(tenant_a.schema_name):
        paid = dict(UsageAttempt.objects.values_list("model_name", "paid_by"))
    assert paid == {"our-llama": "organization", "their-llama": "platform"}
    assert [call.model for call in fake_provider.calls] == ["llama-3", "llama-3"]
