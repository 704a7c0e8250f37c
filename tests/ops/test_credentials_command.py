from __future__ import annotations

import base64
from io import StringIO
from typing import Any

from django.core.management import call_command

from apps.llm.models import ProviderCredential
from apps.llm.services import provider_credential_set
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.models import WebhookEndpoint
from apps.webhooks.services import webhook_endpoint_create
from tests.factories import TEST_ACTOR

K1, K2 = base64.b64encode(b"1" * 32).decode(), base64.b64encode(b"2" * 32).decode()


def test_rotate_reencrypts_provider_keys_and_webhook_secrets_of_every_organization(
    two_tenants: tuple[Organization, Organization], settings: Any
) -> None:
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"k1:{K1}"
    for organization in two_tenants:
        with organization_schema(organization):
            provider_credential_set(organization=organization, provider="openai", api_key="sk-x-1234", actor=TEST_ACTOR)
            webhook_endpoint_create(
                organization=organization, actor=TEST_ACTOR, url="http://127.0.0.1:9/h", events=["*"]
            )
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"k2:{K2},k1:{K1}"
    out = StringIO()
    call_command("credentials", "rotate", stdout=out)
    assert "2 provider key(s) and 2 webhook endpoint secret(s)" in out.getvalue()
    for organization in two_tenants:
        with organization_schema(organization):
            assert set(ProviderCredential.objects.values_list("key_id", flat=True)) == {"k2"}
            assert set(WebhookEndpoint.objects.values_list("secret_key_id", flat=True)) == {"k2"}
