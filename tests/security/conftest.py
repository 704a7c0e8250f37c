"""The LLM tests' fresh engine state for the security tests, which drive the same gateway (the fake
provider and the keys of two organizations are tests/conftest.py's)."""

from tests.llm.conftest import _fresh_llm_state  # noqa: F401 - a fixture, found by pytest through this module
