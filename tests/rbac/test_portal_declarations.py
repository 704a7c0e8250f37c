"""Every page and endpoint of ours that is not a DRF view either declares the permission it needs
(apps.rbac.decorators.permission_required) or is listed here with the reason it needs none; and the
declared pages answer each role as the matrix says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.views import APIView

from apps.rbac.permissions import ROLE_PERMISSIONS, permissions_expand, role_permissions
from apps.tenants.models import Organization
from tests.factories import member_make
from tests.rbac.walk import URLCONFS

# URL name -> why the view needs no permission of the matrix. A new page belongs here only if no
# role should ever be refused it; everything else declares with permission_required.
NO_PERMISSION_NEEDED = {
    None: "the API's JSON 404 for unknown paths under /api/",
    "openai-chat-completions": "an API key's llm:invoke scope, checked by the gateway itself",
    "openai-embeddings": "an API key's llm:invoke scope, checked by the gateway itself",
    "anthropic-messages": "an API key's llm:invoke scope, checked by the gateway itself",
    "openai-models": "the model list, for any valid API key",
    "metrics": "Prometheus scrape, guarded by METRICS_TOKEN",
    "platform-home": "the public landing page of the platform host",
    "dev-mailbox": "development only: the local mailbox",
    "portal-slug-check": "the sign-up form's address check, before any organization exists",
    "portal-handover": "a one-time sign-in token, bound to the user and the host",
    "portal-enter": "a signed-in user choosing among their own organizations",
    "portal-enter-organization": "a signed-in user entering one of their own organizations",
    "portal-home": "every member's home page (it shows only what the role may do)",
    "portal-invitation-accept": "the invitation's token is the permission (for its verified address only)",
    "mfa_remove_webauthn": "allauth's page for the person's own security keys (signed in, reauthenticated)",
    "sso-saml-login": "starts a sign-in at the organization's IdP (anyone may try to sign in)",
    "sso-saml-acs": "the IdP's POST: the signed assertion is the credential",
    "sso-saml-acs-finish": "completes the IdP's POST in this browser's session: the signed assertion is the credential",
    "sso-saml-metadata": "our public SAML service-provider metadata, for the IdP's administrator",
    "sso-saml-sls": "single logout is not offered (404 for everyone)",
    "portal-sso-signin": "Sign in with SSO: finds an organization by the email's verified domain",
    "stripe-webhook": "Stripe's events: the signature made with STRIPE_WEBHOOK_SECRET is the credential",
}


LAST_IN_THE_WALK = {"portal-member-leave"}


def _ours(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver) and pattern.app_name == "admin":
            continue  # the operators' admin: staff with a second factor (apps.ops.admin_site), not the role matrix
        if isinstance(pattern, URLResolver):
            yield from _ours(pattern.url_patterns, prefix + str(pattern.pattern))
            continue
        view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
        target = view or pattern.callback
        if not target.__module__.startswith("apps.") or (view is not None and issubclass(view, APIView)):
            continue  # DRF views: test_declared_permissions; Django's admin and allauth: theirs
        yield prefix + str(pattern.pattern), pattern


def _declared(pattern: URLPattern) -> dict[str, Any] | None:
    return getattr(pattern.callback, "required_permissions", None)


@pytest.mark.parametrize("urlconf", URLCONFS)
def test_every_page_of_ours_declares_a_permission_or_why_it_needs_none(urlconf: str) -> None:
    missing = [
        f"{route} ({pattern.name}): declare it with apps.rbac.decorators.permission_required, or add it to "
        "NO_PERMISSION_NEEDED with the reason no role is ever refused"
        for route, pattern in _ours(get_resolver(urlconf).url_patterns)
        if _declared(pattern) is None and pattern.name not in NO_PERMISSION_NEEDED
    ]
    assert not missing, "\n".join(missing)


def test_the_list_of_exceptions_names_only_pages_that_exist() -> None:
    names = {pattern.name for urlconf in URLCONFS for _, pattern in _ours(get_resolver(urlconf).url_patterns)}
    assert set(NO_PERMISSION_NEEDED) <= names, set(NO_PERMISSION_NEEDED) - names


@pytest.mark.parametrize("role", sorted(ROLE_PERMISSIONS))
def test_declared_pages_answer_each_role_as_the_matrix_says(tenant: Organization, role: str) -> None:
    client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
    client.force_login(member_make(organization=tenant, role=role))
    granted = permissions_expand(role_permissions(role))
    wrong = []
    patterns = [pattern for _, pattern in _ours(get_resolver("cognitionos.urls_tenant").url_patterns)]
    # Leaving the organization (a POST any member may make) ends the walk: the pages after it would
    # answer someone who is no longer a member.
    for pattern in sorted(patterns, key=lambda pattern: pattern.name in LAST_IN_THE_WALK):
        declared = _declared(pattern)
        if declared is None or pattern.pattern.converters:
            continue  # pages with ids are covered by their own tests
        path = reverse(pattern.name or "", urlconf="cognitionos.urls_tenant")
        for method, needed in declared.items():
            status = client.generic(method, path).status_code
            if (status == 403) == (needed in granted):
                wrong.append(f"{role}: {method} {path} needs {needed}: answered {status}")
    assert not wrong, "\n".join(wrong)
