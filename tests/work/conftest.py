from tests.llm.conftest import _fresh_llm_state

__all__ = ["_fresh_llm_state"]
