from __future__ import annotations

from decimal import Decimal

import pytest

from apps.agents.models import Agent
from apps.agents.services import job_request_build
from apps.llm.calls import LlmRefusal
from apps.tenants.models import Organization


def _agent(**fields: object) -> Agent:
    return Agent(name="a", **{"model": "simulated-mini", **fields})


def test_an_agents_settings_are_defaults_under_the_requests_own(tenant: Organization) -> None:
    agent = _agent(system_prompt="Be brief.", temperature=0.2, max_tokens=40, max_cost_usd=Decimal("0.5"))
    built = job_request_build(request={"prompt": "Hi", "temperature": 0.9, "max_tokens": None}, agent=agent)
    assert built == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "model": "simulated-mini",
        "min_quality": 1,
        "temperature": 0.9,
        "max_tokens": 40,
        "max_cost_usd": "0.5",
    }


def test_a_requested_model_or_policy_replaces_the_agents_choice(tenant: Organization) -> None:
    agent = _agent(model="", policy="cheapest", min_quality=4)
    assert job_request_build(request={"prompt": "Hi"}, agent=agent)["policy"] == "cheapest"
    own = job_request_build(request={"prompt": "Hi", "model": "simulated-pro"}, agent=agent)
    assert own["model"] == "simulated-pro" and "policy" not in own and "min_quality" not in own


@pytest.mark.parametrize(
    ("request_", "param", "code"),
    [
        ({"prompt": "Hi", "model": "simulated-mini", "stream": True}, "stream", "unsupported_parameter"),
        ({"prompt": "Hi", "model": "no-such-model"}, "model", "model_not_found"),
    ],
)
def test_what_the_engine_would_refuse_is_refused_before_anything_is_written(
    tenant: Organization, request_: dict[str, object], param: str, code: str
) -> None:
    with pytest.raises(LlmRefusal) as refused:
        job_request_build(request=request_, agent=None)
    assert (refused.value.param, refused.value.code) == (param, code)
