"""SAML SSO in a real browser against the web server: "Sign in with SSO" on the platform host finds the
organization by the address's verified domain, the organization's host starts the sign-in, the
test IdP (tests/sso/idp.py, served by Playwright's request interception at its https address)
answers with a signed response that the browser posts cross-site to the ACS, and the person lands
in the organization's portal as a just-in-time member. A response signed by another key ends on
the refusal page."""

from __future__ import annotations

import html
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apps.accounts.models import User
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import LiveServer, overflowing, screenshot
from tests.sso.idp import Assertion, KeyPair, TestIdp, authn_request_id, encoded, key_pair
from tests.sso.saml_setup import sso_organization_committed

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-sso-{RUN}"
DOMAIN = f"sso-{RUN}.example"
PERSON = f"alice@{DOMAIN}"


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    with sso_organization_committed(
        live_db,
        slug=SLUG,
        name="SSO End to End",
        domain=DOMAIN,
        idp=TestIdp("e2e"),
        default_role="developer",
        people=(PERSON,),
    ) as sso:
        yield sso.organization


def _idp_answers(page: Any, server: LiveServer, *, keys: KeyPair | None = None) -> Callable[[], int]:
    """Serve the test IdP's SSO URL in this page: it answers the AuthnRequest with a signed
    response in an auto-submitting form, as IdPs do (HTTP-POST binding). Returns a hit counter."""
    idp = TestIdp("e2e")
    origin = server.organization_url(SLUG)
    hits: list[str] = []

    def answer(route: Any) -> None:
        hits.append(route.request.url)
        spec = Assertion(
            sp_entity_id=f"{origin}/accounts/saml/{SLUG}/metadata/",
            acs_url=f"{origin}/accounts/saml/{SLUG}/acs/",
            email=PERSON,
            in_response_to=authn_request_id(route.request.url),
        )
        saml_response = encoded(idp.response(spec, keys=keys))
        body = (
            "<!doctype html><html><body onload='document.forms[0].submit()'>"
            f"<form method='post' action='{html.escape(spec.acs_url)}'>"
            f"<input type='hidden' name='SAMLResponse' value='{saml_response}'>"
            "<noscript><button>Continue</button></noscript></form></body></html>"
        )
        route.fulfill(status=200, content_type="text/html", body=body)

    page.route(f"{idp.sso_url}**", answer)
    return lambda: len(hits)


def test_sign_in_with_sso_lands_a_new_member_in_the_portal(
    page: Any, portal_server: LiveServer, organization: Organization
) -> None:
    from playwright.sync_api import expect

    idp_hits = _idp_answers(page, portal_server)
    origin = portal_server.organization_url(SLUG)

    page.goto(f"{portal_server.url}/accounts/sso/")
    page.get_by_label("Work email").fill(PERSON)
    page.get_by_role("button", name="Continue with SSO").click()
    # On the organization's host: allauth's confirmation, a POST (a link can't start a sign-in).
    page.wait_for_url(f"{origin}/accounts/saml/{SLUG}/login/")
    screenshot(page, "sso-login-confirm")
    assert overflowing(page) <= 0
    page.get_by_role("button", name="Continue to your identity provider").click()

    page.wait_for_url(f"{origin}/")
    assert idp_hits() == 1
    expect(page.get_by_text(PERSON).first).to_be_visible()
    screenshot(page, "sso-signed-in-home")

    tenant_connection().set_schema_to_public()
    user = User.objects.get(email=PERSON)
    assert not user.has_usable_password()
    assert Membership.objects.get(user=user, organization=organization).role == Role.DEVELOPER


def test_a_response_signed_by_another_key_ends_on_the_refusal_page(
    page: Any, portal_server: LiveServer, organization: Organization
) -> None:
    from playwright.sync_api import expect

    _idp_answers(page, portal_server, keys=key_pair("e2e-attacker"))
    origin = portal_server.organization_url(SLUG)

    page.goto(f"{origin}/accounts/saml/{SLUG}/login/")
    page.get_by_role("button", name="Continue to your identity provider").click()
    expect(page.get_by_role("heading", name="Single sign-on didn't work")).to_be_visible()
    expect(page.get_by_text("bad_signature")).to_be_visible()
    assert "SAMLResponse" not in page.content() and "<saml" not in page.content()
    screenshot(page, "sso-refused")
    page.set_viewport_size({"width": 390, "height": 844})
    assert overflowing(page) <= 0
    tenant_connection().set_schema_to_public()
    assert not User.objects.filter(email=PERSON).exists()
