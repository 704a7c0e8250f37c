from tests.llm.conftest import _fresh_llm_state, fake_provider, fake_provider_server

__all__ = ["_fresh_llm_state", "fake_provider", "fake_provider_server"]
