from __future__ import annotations

import base64
from typing import Any

import openai
import pytest
from django_tenants.utils import schema_context

from apps.llm.breaker import OPEN, breaker_state
from apps.llm.models import ProviderCredential, UsageAttempt
from apps.llm.services import (
    provider_credential_set,
    provider_credentials_rotate,
    provider_own_keys,
    provider_own_keys_forget,
)
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR
from tests.llm.conftest import gateway_client
from tests.support.fake_provider import FakeProvider

KEY_1 = "k1:" + base64.b64encode(b"1" * 32).decode()
KEY_2 = "k2:" + base64.b64encode(b"2" * 32).decode()


def test_own_key_is_stored_encrypted_rotated_and_never_shown(tenant: Organization, settings: Any) -> None:
    settings.CREDENTIALS_ENCRYPTION_KEYS = KEY_1
    credential = provider_credential_set(
        organization=tenant, provider="openai", api_key="sk-org-a-123456", actor=TEST_ACTOR
    )
    assert credential.hint == "3456" and bytes(credential.ciphertext).find(b"sk-org") == -1
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"{KEY_2},{KEY_1}"
    assert provider_credentials_rotate(organization=tenant) == 1
    assert ProviderCredential.objects.get().key_id == "k2"
    settings.CREDENTIALS_ENCRYPTION_KEYS = KEY_2  # the old key can go now
    provider_own_keys_forget()
    assert provider_own_keys(organization=tenant) == {"openai": "sk-org-a-123456"}


def test_an_organization_with_its_own_key_uses_it_and_pays_itself(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    key_b: str,
    fake_provider: FakeProvider,
    settings: Any,
) -> None:
    settings.OPENAI_API_KEY = ""  # no platform OpenAI key: only organizations' own keys
    provider_own_keys_forget()
    tenant_a, _ = two_tenants
    provider_credential_set(organization=tenant_a, provider="openai", api_key="sk-org-a-123456", actor=TEST_ACTOR)
    provider_own_keys_forget()
    assert "gpt-4o-mini" in {m.id for m in gateway_client(key_a).models.list().data}
    assert "gpt-4o-mini" not in {m.id for m in gateway_client(key_b).models.list().data}
    completion = gateway_client(key_a).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert completion.model == "gpt-4o-mini"
    with schema_context(tenant_a.schema_name):
        assert UsageAttempt.objects.get().paid_by == "organization"


def test_embeddings_use_the_organizations_own_key_and_its_own_breaker(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    key_b: str,
    fake_provider: FakeProvider,
    settings: Any,
) -> None:
    """Embeddings go through the same attempt loop as chat: the organization's own key (with no
    platform key at all), paid by the organization, and a breaker of its own for that key."""
    settings.OPENAI_API_KEY = ""
    settings.LLM_BREAKER_FAILURES = 3
    settings.LLM_MAX_ATTEMPTS = 1
    tenant_a, _ = two_tenants
    provider_credential_set(organization=tenant_a, provider="openai", api_key="sk-org-a-123456", actor=TEST_ACTOR)
    provider_own_keys_forget()
    embedded = gateway_client(key_a).embeddings.create(model="text-embedding-3-small", input="Hello there")
    assert len(embedded.data[0].embedding) == 1536
    assert [call.path for call in fake_provider.calls] == ["/v1/embeddings"]
    with schema_context(tenant_a.schema_name):
        assert UsageAttempt.objects.get().paid_by == "organization"
    with pytest.raises(openai.NotFoundError):  # B has no key of its own, and there is no platform key
        gateway_client(key_b).embeddings.create(model="text-embedding-3-small", input="Hello there")

    fake_provider.fail_models({"text-embedding-3-small"}, status=503)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            gateway_client(key_a).embeddings.create(model="text-embedding-3-small", input="Hello there")
    assert breaker_state("openai", "text-embedding-3-small", scope=f"org{tenant_a.pk}") == OPEN
    assert breaker_state("openai", "text-embedding-3-small") != OPEN  # A's key's failures are A's own
    sent = len(fake_provider.calls)
    with pytest.raises(openai.InternalServerError) as refused:  # the open breaker: no provider call
        gateway_client(key_a).embeddings.create(model="text-embedding-3-small", input="Hello there")
    assert refused.value.status_code == 502
    assert len(fake_provider.calls) == sent
