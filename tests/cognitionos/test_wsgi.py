"""The WSGI application (cognitionos/wsgi.py): the model API's endpoints (/v1/) run through a chain
without the browser-only middleware; every other path through the whole chain."""

from __future__ import annotations

import httpx2
from django.conf import settings
from django_tenants.utils import schema_context

from apps.llm.models import UsageAttempt
from apps.tenants.models import Organization
from cognitionos.wsgi import api_application, api_middleware, full_application
from tests.llm.conftest import _InThisTransaction

HELLO = [{"role": "user", "content": "Hello through the short chain"}]


def _client(host: str) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.WSGITransport(app=_InThisTransaction()), base_url=f"http://{host}")


def _view_hooks(handler: object) -> set[str]:
    """The classes of the middleware whose process_view the loaded handler runs."""
    hooks: list[object] = getattr(handler, "_view_middleware")  # noqa: B009 - Django's private list
    return {type(getattr(hook, "__self__", hook)).__name__ for hook in hooks}


def test_the_api_chain_is_the_whole_chain_without_the_browser_only_middleware() -> None:
    chain = api_middleware()
    assert chain == [path for path in settings.MIDDLEWARE if path not in settings.BROWSER_ONLY_MIDDLEWARE]
    assert settings.BROWSER_ONLY_MIDDLEWARE.issubset(settings.MIDDLEWARE)  # every name is one in use
    for kept in (
        "apps.ops.request_id.RequestIdMiddleware",
        "apps.tenants.middleware.TenantMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "apps.ops.metrics.BoundedPrometheusAfterMiddleware",
    ):
        assert kept in chain
    # As loaded: CSRF's view hook runs in the whole chain only; metrics' in both.
    assert "CsrfViewMiddleware" in _view_hooks(full_application)
    assert "CsrfViewMiddleware" not in _view_hooks(api_application)
    assert "BoundedPrometheusAfterMiddleware" in _view_hooks(api_application)


def test_api_calls_take_the_short_chain_and_portal_pages_the_whole_one(
    two_tenants: tuple[Organization, Organization], key_a: str, key_b: str
) -> None:
    api = _client("localhost")
    for key in (key_a, key_b):
        answer = api.post(
            "/v1/chat/completions",
            json={"model": "simulated-mini", "messages": HELLO},
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "short-chain-1"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Request-ID"] == "short-chain-1"  # request ids: kept
        assert answer.headers["X-Content-Type-Options"] == "nosniff"  # security headers: kept
        assert "X-Frame-Options" not in answer.headers and "set-cookie" not in answer.headers
    # Each key's call is its own organization's: the short chain resolves tenants as the whole one.
    for organization in two_tenants:
        with schema_context(organization.schema_name):
            assert UsageAttempt.objects.filter(model_name="simulated-mini").count() == 1
    refused = api.post("/v1/chat/completions", json={"model": "simulated-mini", "messages": HELLO})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"

    page = _client(f"{two_tenants[0].slug}.localhost").get("/accounts/login/")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY" and "csrftoken" in page.headers.get("set-cookie", "")
