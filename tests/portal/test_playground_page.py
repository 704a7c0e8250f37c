"""The portal's playground: a prompt streamed through the governed path as the signed-in member
(ledger, caches, budgets), its refusals, its validation (the gateway's own), its code view, per
organization and per role, CSRF-protected."""

from __future__ import annotations

import ast
import html
import json
import re
import shlex
import time
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import anthropic
import httpx2
import openai
import pytest
from django.http import StreamingHttpResponse
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.apikeys.selectors import apikey_cache_forget
from apps.apikeys.services import apikey_create
from apps.billing.selectors import plan_limit
from apps.llm import caching
from apps.llm.models import AttemptStatus, BudgetWindow, CachedResponse, UsageAttempt
from apps.llm.platform.selectors import catalog_forget
from apps.llm.selectors import llm_settings_forget
from apps.llm.services import budget_set, llm_settings_set, provider_own_keys_forget
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.factories import TEST_ACTOR, member_make
from tests.llm.conftest import _InThisTransaction
from tests.portal.conftest import ClientFor
from tests.support.fake_provider import ANSWER_PREFIX, FakeProvider

RUN = "/playground/run/"
CODE = "/playground/code/"
# Quotes of both kinds, a backslash, newlines, a tab, a closing script tag, HTML and a line separator.
NASTY = 'Say "hi" it\'s \\n fine\n</script><script>alert(1)</script>\t<b>bold</b> \u2028 end'


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(autouse=True)
def fake(fake_server: FakeProvider, settings: Any) -> Iterator[FakeProvider]:
    """The fake OpenAI and Anthropic servers as the platform's provider credentials, and no cache,
    counter or catalogue left over from another test."""
    fake_server.reset()
    settings.OPENAI_API_KEY = "sk-test-platform"
    settings.OPENAI_BASE_URL = fake_server.openai_base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-platform"
    settings.ANTHROPIC_BASE_URL = fake_server.anthropic_base_url
    settings.LLM_RETRY_BASE_S = 0.01

    def forget() -> None:
        caching.l1.clear()
        catalog_forget()
        apikey_cache_forget()
        provider_own_keys_forget()
        llm_settings_forget()
        client = redis_client()
        keys = list(client.scan_iter("llm:*", count=1000))
        if keys:
            client.delete(*keys)

    forget()
    yield fake_server
    forget()


def signed_in(client_for: ClientFor, organization: Organization, role: str = "developer") -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def prompt(**fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "system": "",
        "role": ["user"],
        "content": ["Tell me about the playground"],
        "temperature": "1",
        "top_p": "1",
        "max_tokens": "64",
        "seed": "",
    }
    form.update(fields)
    return form


def events(response: Any) -> list[tuple[str, dict[str, Any]]]:
    """The page's server-sent events, in order."""
    assert isinstance(response, StreamingHttpResponse), response.content[:300]
    assert response["Content-Type"] == "text/event-stream"
    raw = b"".join(cast(Iterator[bytes], response.streaming_content)).decode()
    found = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n")
        found.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


def ledger(organization: Organization) -> list[UsageAttempt]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id"))


def test_a_prompt_streams_through_the_governed_path_as_the_member_and_a_repeat_is_a_cache_hit(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization)
    first = events(client.post(RUN, prompt(system="Be brief.")))
    names = [name for name, _ in first]
    assert names[0] == "start" and names[-1] == "end"
    deltas = [data["text"] for name, data in first if name == "delta"]
    assert len(deltas) > 1  # streamed in pieces, as the provider sent them
    assert "".join(deltas) == ANSWER_PREFIX + "Tell me about the playground"
    end = first[-1][1]
    assert end["model"] == "gpt-4o-mini" and end["cache"] == "miss"
    assert end["prompt_tokens"] > 0 and end["completion_tokens"] > 0
    assert Decimal(end["cost_usd"]) > 0 and end["latency_ms"] >= end["first_token_ms"] > 0
    assert len(fake.calls) == 1
    sent = fake.calls[0].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == 1 and sent["top_p"] == 1
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 64

    (attempt,) = ledger(organization)
    assert (attempt.principal_kind, attempt.principal_id, attempt.principal_label) == ("user", str(user.pk), user.email)
    assert attempt.status == AttemptStatus.SUCCEEDED and attempt.source == "playground"
    assert attempt.cost_usd == Decimal(end["cost_usd"]) == Decimal(end["settled_usd"])
    assert Decimal(end["reserved_usd"]) == attempt.reserved_usd > attempt.cost_usd  # the worst case, released
    assert end["request_id"] == attempt.request_id

    again = events(client.post(RUN, prompt(system="Be brief.")))
    assert again[0] == ("start", {"request_id": again[0][1]["request_id"], "model": "gpt-4o-mini", "cache": "l1"})
    assert "".join(data["text"] for name, data in again if name == "delta") == "".join(deltas)
    assert again[-1][1]["cache"] == "l1" and Decimal(again[-1][1]["cost_usd"]) == 0
    assert Decimal(again[-1][1]["reserved_usd"]) == 0 and Decimal(again[-1][1]["saved_usd"]) == attempt.cost_usd
    assert len(fake.calls) == 1  # the provider was not asked twice
    assert [(a.status, a.cache_layer) for a in ledger(organization)] == [
        (AttemptStatus.SUCCEEDED, ""),
        (AttemptStatus.CACHE_HIT, "l1"),
    ]


def test_a_stream_the_page_left_is_charged_its_reservation_and_gives_its_slot_back(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    from cognitionos.long_responses import slots

    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    before = slots.open
    response = client.post(RUN, prompt())
    assert slots.open == before + 1
    chunks = iter(cast(Iterator[bytes], cast(Any, response).streaming_content))
    assert next(chunks).startswith(b"event: start")
    # What the server does when the browser stops reading (the page's Stop button): close the
    # response's body. Through the test client's own wrapper, which keeps the test's transaction
    # (response.close() would end it: the wrapper reconnects Django's connection closer first).
    for close in cast(Any, response)._resource_closers:
        close()
    assert slots.open == before
    (attempt,) = ledger(organization)
    assert (attempt.status, attempt.error_class) == (AttemptStatus.FAILED, "client_disconnected")
    assert attempt.cost_usd == attempt.reserved_usd > 0


def test_a_stream_closed_before_its_first_byte_is_settled_at_once(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    response = client.post(RUN, prompt())
    for close in cast(Any, response)._resource_closers:  # as above, before reading anything
        close()
    (attempt,) = ledger(organization)
    assert (attempt.status, attempt.error_class) == (AttemptStatus.FAILED, "client_disconnected")


def test_the_cost_is_previewed_before_the_prompt_runs(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization)
    preview = client.post("/playground/preview/", prompt(max_tokens="1000"))
    assert preview.status_code == 200
    figures = preview.json()
    assert figures["model"] == "gpt-4o-mini" and figures["expected_output_tokens"] == 256
    assert 0 < Decimal(figures["expected_usd"]) < Decimal(figures["worst_usd"])
    # The worst case is over the fallbacks (gpt-4o-mini's, claude-haiku-4-5, is dearer): it covers
    # what the call reserves on the model that answers.
    assert figures["worst_model"] == "claude-haiku-4-5"
    end = events(client.post(RUN, prompt(max_tokens="1000")))[-1][1]
    assert 0 < Decimal(end["reserved_usd"]) < Decimal(figures["worst_usd"])
    assert fake.calls and len(ledger(organization)) == 1  # the preview called nothing, wrote nothing
    assert figures["budget"] is None  # no hard budget yet

    # Against what the hard budgets that count for this member have left: the tightest is named.
    other = member_make(organization=organization, role="developer")
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal("0.01"), actor=TEST_ACTOR
    )
    budget_set(
        organization=organization,
        scope="user",
        scope_id=str(other.pk),
        period="day",
        limit_usd=Decimal("0.000001"),
        actor=TEST_ACTOR,
    )  # someone else's: not this member's concern
    budget_set(
        organization=organization,
        scope="user",
        scope_id=str(user.pk),
        period="month",
        limit_usd=Decimal("0.000002"),
        hard=False,
        actor=TEST_ACTOR,
    )  # soft: warns, never refuses
    budget = client.post("/playground/preview/", prompt()).json()["budget"]
    assert budget["label"] == "the organization's daily budget"
    assert Decimal(budget["remaining_usd"]) == Decimal("0.01")  # counted from the budget's making
    budget_set(
        organization=organization,
        scope="user",
        scope_id=str(user.pk),
        period="month",
        limit_usd=Decimal("0.00001"),
        actor=TEST_ACTOR,
    )
    assert client.post("/playground/preview/", prompt()).json()["budget"]["label"] == "your monthly budget"

    refused = client.post("/playground/preview/", prompt(top_p="2"))
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "top_p"
    assert client.post("/playground/preview/", prompt(model="no-such-model")).json()["error"]["field"] == "model"


def test_a_routing_policy_is_accepted_as_the_model(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client, _ = signed_in(client_for, two_tenants[0])
    found = events(client.post(RUN, prompt(model="cheapest")))
    assert found[-1][0] == "end" and found[-1][1]["model"]  # the model the policy chose


def test_a_hard_budget_below_one_reservation_refuses_with_the_budget_message(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization = two_tenants[0]
    budget_set(
        organization=organization,
        scope="organization",
        period="day",
        limit_usd=Decimal("0.000001"),
        hard=True,
        actor=TEST_ACTOR,
    )
    client, _ = signed_in(client_for, organization)
    refused = client.post(RUN, prompt())
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "organization budget (day, $0.000001" in error["message"] and "worst-case cost" in error["message"]
    assert fake.calls == [] and ledger(organization) == []
    with schema_context(organization.schema_name):
        assert all(window.reserved_usd == 0 for window in BudgetWindow.objects.all())


def test_a_stream_over_the_process_cap_is_refused_before_anything_is_reserved(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider, settings: Any
) -> None:
    settings.LONG_RESPONSES_PER_PROCESS = 0
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    refused = client.post(RUN, prompt())
    assert refused.status_code == 429 and refused["Retry-After"] == "5"
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert fake.calls == [] and ledger(organization) == []


def test_a_rate_limited_member_is_told_so_with_when_to_retry(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.llm import ratelimits
    from apps.llm.ratelimits import rate_limit_take

    now = time.time()  # one window throughout: a minute turning before the request would empty it
    monkeypatch.setattr(ratelimits, "time", SimpleNamespace(time=lambda: now))
    organization = two_tenants[0]
    for _ in range(plan_limit(organization, "requests_per_minute")):
        rate_limit_take(organization=organization, api_key_id=None, tokens=1)
    client, _ = signed_in(client_for, organization)
    refused = client.post(RUN, prompt())
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert (error["code"], error["retryable"]) == ("rate_limit_exceeded", True)
    assert fake.calls == [] and ledger(organization) == []


def test_a_model_whose_provider_has_no_credentials_is_refused_with_that_reason(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider, settings: Any
) -> None:
    settings.OPENAI_API_KEY = settings.ANTHROPIC_API_KEY = ""
    client, _ = signed_in(client_for, two_tenants[0])
    assert 'value="gpt-4o-mini"' not in client.get("/playground/").content.decode()  # not offered
    refused = client.post(RUN, prompt())  # gpt-4o-mini, then its fallback claude-haiku-4-5
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "provider_not_configured"
    assert fake.calls == []


@pytest.mark.parametrize(
    "case",
    [
        ({"temperature": "3"}, "temperature", "from 0 to 2"),
        ({"temperature": "nan"}, "temperature", "from 0 to 2"),
        ({"top_p": "abc"}, "top_p", "must be a number"),
        ({"top_p": "1.5"}, "top_p", "from 0 to 1"),
        ({"max_tokens": "0"}, "max_tokens", "from 1 to"),
        ({"max_tokens": "2000000"}, "max_tokens", "from 1 to"),
        ({"seed": "1.5"}, "seed", "whole number"),
        ({"seed": "9" * 30}, "seed", "whole number"),
        ({"seed": str(2**63)}, "seed", "integer from"),
        ({"model": ""}, "model", "Choose a model"),
        ({"content": ["   "]}, "turn-1", "empty"),
        ({"role": ["user", "system"], "content": ["a", "b"]}, "turn-2", "user or assistant"),
        ({"role": ["user"], "content": ["a", "b"]}, "turns", "each with a role"),
        ({"role": [], "content": []}, "turns", "Add a message"),
        ({"role": ["user"] * 51, "content": ["a"] * 51}, "turns", "at most 50"),
    ],
)
def test_bad_parameters_are_refused_400_naming_the_field(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    fake: FakeProvider,
    case: tuple[dict[str, Any], str, str],
) -> None:
    fields, field, says = case
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    for url in (RUN, CODE):
        refused = client.post(url, prompt(**fields))
        assert refused.status_code == 400, (url, refused.content[:200])
        error = refused.json()["error"]
        assert (error["field"], error["code"]) == (field, "invalid_field")
        assert says in error["message"]
    assert fake.calls == [] and ledger(organization) == []


def test_a_form_over_the_body_limit_is_refused_before_anything_runs(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    page = client.get("/playground/").content.decode()
    assert 'data-max-body-bytes="2000"' in page  # the page checks it before sending, too
    assert client.post(RUN, prompt(content=["x" * 3000])).status_code == 400
    assert fake.calls == [] and ledger(organization) == []


def test_an_unknown_model_is_refused_at_the_model_field(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client, _ = signed_in(client_for, two_tenants[0])
    refused = client.post(RUN, prompt(model="no-such-model"))
    assert refused.status_code == 404
    assert refused.json()["error"] | {"message": ""} == {
        "message": "",
        "code": "model_not_found",
        "field": "model",
        "retryable": False,
    }


def test_the_picker_offers_only_allowed_models_and_a_model_not_allowed_is_refused_at_its_field(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization = two_tenants[0]
    llm_settings_set(
        organization=organization, actor=TEST_ACTOR, allowed_models=["gpt-4o-mini"], default_policy="cheapest"
    )
    client, _ = signed_in(client_for, organization)
    text = client.get("/playground/").content.decode()
    assert 'value="gpt-4o-mini"' in text and 'value="gpt-4o"' not in text and 'value="simulated-mini"' not in text
    assert '<option value="cheapest" selected>' in text  # the organization's default policy
    refused = client.post(RUN, prompt(model="gpt-4o"))
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("model_not_allowed", "model")
    assert "not allowed in this organization" in error["message"]
    assert fake.calls == [] and ledger(organization) == []
    assert events(client.post(RUN, prompt(model="cheapest")))[-1][1]["model"] == "gpt-4o-mini"


def test_a_member_of_one_organization_cannot_run_prompts_for_another(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization_a, organization_b = two_tenants
    budget_set(organization=organization_b, scope="organization", period="day", limit_usd=Decimal(5), actor=TEST_ACTOR)
    member_a, user_a = signed_in(client_for, organization_a, "owner")
    # A's member, signed in on B's host: not a member there.
    outsider = client_for(f"{organization_b.slug}.localhost")
    outsider.force_login(user_a)
    assert outsider.get("/playground/").status_code == 403
    assert outsider.post(RUN, prompt()).status_code == 403
    assert outsider.post(CODE, prompt()).status_code == 403
    assert outsider.post("/playground/preview/", prompt()).status_code == 403
    # A's answer is cached for A only: B's first identical prompt goes to the provider.
    assert events(member_a.post(RUN, prompt()))[-1][1]["cache"] == "miss"
    with schema_context(organization_b.schema_name):
        assert CachedResponse.objects.count() == 0
        assert all(w.spent_usd == w.reserved_usd == 0 for w in BudgetWindow.objects.all())
    assert ledger(organization_b) == []
    member_b, _ = signed_in(client_for, organization_b)
    assert events(member_b.post(RUN, prompt()))[-1][1]["cache"] == "miss"
    assert len(fake.calls) == 2
    assert [a.principal_kind for a in ledger(organization_b)] == ["user"]


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("owner", True), ("admin", True), ("developer", True), ("billing", False), ("viewer", False)],
)
def test_only_roles_with_llm_invoke_see_and_use_the_playground(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str, allowed: bool
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, role)
    page = client.get("/playground/")
    assert page.status_code == (200 if allowed else 403)
    assert ('href="/playground/"' in client.get("/").content.decode()) == allowed
    run = client.post(RUN, prompt())
    assert run.status_code == (200 if allowed else 403)
    if allowed:
        assert events(run)[-1][0] == "end"
    assert client.post(CODE, prompt()).status_code == (200 if allowed else 403)
    assert client.post("/playground/preview/", prompt()).status_code == (200 if allowed else 403)
    assert len(ledger(organization)) == (1 if allowed else 0)


def test_the_page_offers_models_policies_and_labelled_parameters(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client, _ = signed_in(client_for, two_tenants[0])
    page = client.get("/playground/")
    text = page.content.decode()
    assert 'aria-current="page"' in text and 'href="/playground/"' in text
    picker = re.search(r'<select id="id_model".*?</select>', text, re.DOTALL)
    assert picker is not None
    selected = re.findall(r'<option value="([^"]+)" selected>([^<]*)<', picker.group(0))
    assert len(selected) == 1 and "(simulated)" not in selected[0][1]  # a real model when there is one
    assert '<option value="simulated-mini">simulated-mini (simulated)</option>' in text
    assert 'value="cheapest"' in text and 'value="balanced"' in text
    for field in ("id_system", "id_model", "id_temperature", "id_top_p", "id_max_tokens", "id_seed"):
        assert f'<label for="{field}">' in text
    assert '<label class="turn__label" for="turn-1-content" data-label="Message">Message 1</label>' in text
    assert "/static/portal/playground.js" in text
    assert 'data-request-url="/requests/REQUEST_ID/"' in text  # the answer links to the request log
    assert not re.search(r"\son[a-z]+=", text)  # no inline handlers (CSP-friendly)


def test_posts_need_the_csrf_token(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    client = Client(HTTP_HOST=f"{organization.slug}.localhost", enforce_csrf_checks=True)
    client.force_login(member_make(organization=organization, role="developer"))
    assert client.post(RUN, prompt()).status_code == 403
    assert client.post(CODE, prompt()).status_code == 403
    assert ledger(organization) == []
    client.get("/playground/")  # sets the CSRF cookie, as the page does for its script
    token = client.cookies["csrftoken"].value
    assert client.post(CODE, prompt(), headers={"X-CSRFToken": token}).status_code == 200
    assert events(client.post(RUN, prompt(), headers={"X-CSRFToken": token}))[-1][0] == "end"


def snippets(response: Any) -> dict[str, str]:
    text = response.content.decode()
    found = dict(re.findall(r'<code id="snippet-(\w+)" data-language="\w+">(.*?)</code>', text, re.DOTALL))
    return {name: html.unescape(code) for name, code in found.items()}


def test_view_as_code_is_valid_escaped_code_for_the_same_call(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client, _ = signed_in(client_for, two_tenants[0])
    form = prompt(system=NASTY, role=["user", "assistant", "user"], content=[NASTY, "Fine.", "Again: " + NASTY])
    form.update(seed="42", temperature="0.7")
    response = client.post(CODE, form)
    assert response.status_code == 200
    page = response.content.decode()
    assert "</script><script>" not in page and "<b>bold</b>" not in page  # escaped like any text
    code = snippets(response)
    assert set(code) == {"openai", "anthropic", "curl"}
    assert '<a href="/keys/">create one</a>' in page  # a developer may create keys
    for name in ("openai", "anthropic"):
        ast.parse(code[name])
        assert "cos_" not in code[name] and 'os.environ["COGNITIONOS_API_KEY"]' in code[name]
    assert 'base_url="http://localhost/v1"' in code["openai"]
    assert 'base_url="http://localhost"' in code["anthropic"]
    assert "seed=42" in code["openai"] and "temperature=0.7" in code["openai"]
    assert "seed=" not in code["anthropic"] and "The Messages API has no seed" in code["anthropic"]
    assert 'extra_body={"temperature": 0.7, "top_p": 1}' in code["anthropic"]

    # The openai call, read back from the code, is the page's prompt exactly.
    tree = ast.parse(code["openai"])
    create = next(
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "create"
    )
    arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in create.keywords}
    assert arguments["messages"] == [
        {"role": "system", "content": NASTY},
        {"role": "user", "content": NASTY},
        {"role": "assistant", "content": "Fine."},
        {"role": "user", "content": "Again: " + NASTY},
    ]
    assert arguments["model"] == "gpt-4o-mini" and arguments["max_tokens"] == 64 and arguments["stream"] is True

    words = shlex.split(code["curl"].replace("\\\n", " "))
    assert words[:3] == ["curl", "-N", "http://localhost/v1/chat/completions"]
    assert "Authorization: Bearer $COGNITIONOS_API_KEY" in words
    body = json.loads(words[words.index("-d") + 1])
    assert body["messages"] == arguments["messages"] and body["seed"] == 42 and body["stream"] is True


def test_line_breaks_from_the_browser_reach_the_model_and_the_code_as_newlines(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    client, _ = signed_in(client_for, two_tenants[0])
    form = prompt(system="one\r\ntwo", content=["three\r\nfour"])
    code = snippets(client.post(CODE, form))
    assert '"content": "one\\ntwo"' in code["openai"] and '"content": "three\\nfour"' in code["openai"]
    assert "\\r" not in code["openai"] + code["anthropic"] + code["curl"]
    events(client.post(RUN, form))
    assert [m["content"] for m in fake.calls[0].body["messages"]] == ["one\ntwo", "three\nfour"]


def test_the_openai_and_anthropic_snippets_run_against_the_gateway(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The generated code, executed as it is, with the SDKs' HTTP sent to this process's gateway (so
    it shares the test's transaction) and a real key in the environment variable it reads."""
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization)
    code = snippets(client.post(CODE, prompt(content=[NASTY], model="simulated-mini")))
    key = apikey_create(organization=organization, name="snippets", actor=TEST_ACTOR).key
    monkeypatch.setenv("COGNITIONOS_API_KEY", key)
    for module, name in ((openai, "OpenAI"), (anthropic, "Anthropic")):
        real = getattr(module, name)

        def in_process(*args: Any, real: Any = real, **kwargs: Any) -> Any:
            transport = httpx2.WSGITransport(app=_InThisTransaction())
            client = httpx2.Client(transport=transport, base_url=kwargs["base_url"])
            return real(*args, **kwargs, max_retries=0, http_client=client)

        monkeypatch.setattr(module, name, in_process)
    for name in ("openai", "anthropic"):
        exec(compile(code[name], f"<{name} snippet>", "exec"), {})  # noqa: S102 - our generated code, the point of the test
        printed = capsys.readouterr().out
        assert printed.startswith("[simulated] simulated-mini answer"), (name, printed)
        assert NASTY[:20] in printed
    assert [a.source for a in ledger(organization)][-2:] == ["gateway", "messages"]
