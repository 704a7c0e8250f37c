"""The LLM tests' fixtures (fake provider, keys of two organizations, fresh engine state) for the
security tests, which drive the same gateway."""

from tests.llm.conftest import (  # noqa: F401 - fixtures, found by pytest through this module
    _fresh_llm_state,
    fake_provider,
    fake_provider_server,
    key_a,
    key_b,
)
