"""AES-GCM sealing of secrets at rest (cognitionos.sealing)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from cognitionos import sealing

KEY_1 = "k1:" + base64.b64encode(b"1" * 32).decode()
KEY_2 = "k2:" + base64.b64encode(b"2" * 32).decode()


def test_sealed_secrets_are_bound_to_their_context_and_survive_rotation(settings: Any) -> None:
    settings.CREDENTIALS_ENCRYPTION_KEYS = KEY_1
    sealed = sealing.seal("sk-secret-value", context="org_a:openai")
    assert b"sk-secret" not in sealed.ciphertext and sealed.key_id == "k1"
    assert sealing.unseal(sealed, context="org_a:openai") == "sk-secret-value"
    with pytest.raises(InvalidTag):
        sealing.unseal(sealed, context="org_b:openai")  # copied to another organization: useless
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"{KEY_2},{KEY_1}"  # k2 current, k1 still readable
    assert sealing.unseal(sealed, context="org_a:openai") == "sk-secret-value"
    assert sealing.seal("x", context="c").key_id == "k2"
