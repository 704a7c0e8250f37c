"""Single sign-on settings in a real browser: an owner adds an email domain, publishes its TXT record
(on a real DNS server the web process asks), verifies it, pastes the IdP's metadata and reads the
ACS URL to give back; a viewer sees no SSO page or form, and the server refuses their post."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import User
from apps.accounts.services import email_verified_ensure
from apps.ops.management.commands.up import web_hosts
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.sso.models import IdentityProvider, SsoDomain
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.factories import TEST_ACTOR, organization_make
from tests.sso.idp import TestIdp
from tests.support.dns_server import RunningDnsServer, dns_server_running
from tests.support.processes import free_port, web_serving

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-sso-{RUN}"
DOMAIN = f"corp-{RUN}.example"
OWNER = f"owner-{RUN}@owners-{RUN}.example"
FREE_SLUG = f"e2e-sso-free-{RUN}"
FREE_OWNER = f"free-owner-{RUN}@owners-{RUN}.example"
VIEWER = f"viewer-{RUN}@owners-{RUN}.example"
PASSWORD = "a-long-enough-passphrase-42"


def _account(email: str) -> User:
    user, _created = User.objects.get_or_create(email=email)
    user.set_password(PASSWORD)
    user.save()
    email_verified_ensure(user=user)
    return user


@pytest.fixture
def dns() -> Iterator[RunningDnsServer]:
    with dns_server_running() as server:
        yield server


@pytest.fixture
def sso_server(live_db: LiveDb, tmp_path: Path, dns: RunningDnsServer) -> Iterator[LiveServer]:
    """The web server on the test database, resolving verification records through the test's DNS server."""
    port = free_port()
    env = {
        "COGNITIONOS_MAILBOX_DIR": str(tmp_path / "mail"),
        "WEB_PROCESSES": "1",
        "WEB_THREADS": "4",
        "SSO_DNS_NAMESERVERS": dns.address,
        "SSO_DNS_TIMEOUT_SECONDS": "3",
    }
    with web_serving(port=port, env=env, hosts=web_hosts("127.0.0.1")):
        yield LiveServer(port, tmp_path / "mail")


@pytest.fixture
def team(live_db: LiveDb) -> Iterator[Organization]:
    organization = organization_make(slug=SLUG, name="SSO End to End", plan_code="enterprise", owner_email=OWNER)
    live_db.track(organization)
    live_db.track(organization_make(slug=FREE_SLUG, name="Free End to End", plan_code="free", owner_email=FREE_OWNER))
    tenant_connection().set_schema_to_public()
    _account(OWNER)
    _account(FREE_OWNER)
    membership_create(user=_account(VIEWER), organization=organization, role=Role.VIEWER, actor=TEST_ACTOR)
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email__in=[OWNER, VIEWER, FREE_OWNER]).delete()


def _sign_in(page: Any, origin: str, email: str, next_path: str) -> None:
    page.goto(f"{origin}/accounts/login/?next={next_path}")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()


def test_owner_verifies_a_domain_and_configures_the_idp_viewer_is_refused(
    page: Any, browser: Any, sso_server: LiveServer, dns: RunningDnsServer, team: Organization
) -> None:
    from playwright.sync_api import expect

    origin = sso_server.organization_url(SLUG)
    _sign_in(page, origin, OWNER, "/settings/sso/")
    page.wait_for_url(f"{origin}/settings/sso/")
    expect(page.get_by_role("heading", name="Single sign-on", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Single sign-on")).to_have_attribute("aria-current", "page")
    assert unlabeled_fields(page) == []
    screenshot(page, "sso-settings-empty")

    # The domain: added, its TXT record shown, published on the DNS server, verified.
    page.get_by_label("Email domain", exact=True).fill(DOMAIN.upper())
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_text(f"{DOMAIN} added.")).to_be_visible()
    record_name = f"_cognitionos-verification.{DOMAIN}"
    expect(page.get_by_text(record_name, exact=True)).to_be_visible()
    tenant_connection().set_schema_to_public()
    token = SsoDomain.objects.get(organization=team).verification_token
    expect(page.get_by_text(f"cognitionos-verification={token}", exact=True)).to_be_visible()
    screenshot(page, "sso-settings-domain-pending")

    page.get_by_role("button", name=f"Verify {DOMAIN}").click()
    expect(page.get_by_role("alert")).to_contain_text(f"No TXT record found at {record_name}.")
    dns.txt[record_name] = [f"cognitionos-verification={token}"]
    with page.expect_response(lambda answer: answer.url.endswith("/verify/")) as verified:
        page.get_by_role("button", name=f"Verify {DOMAIN}").click()
    assert verified.value.request.headers.get("hx-request") == "true"  # the card, answered in place
    expect(page.get_by_text(f"{DOMAIN} is verified.")).to_be_visible()
    expect(page.get_by_text("through DNS")).to_be_visible()
    assert record_name in dns.resolver.queries

    # The identity provider: metadata pasted, then what to give back to it.
    idp = TestIdp(f"e2e-{RUN}")
    page.get_by_label("Identity provider metadata (XML)").fill(idp.metadata_xml())
    page.get_by_label("Members can sign in through this identity provider").check()
    page.get_by_label("Role of people who join through SSO").select_option("developer")
    page.get_by_role("button", name="Save identity provider").click()
    expect(page.get_by_text("Identity provider saved.")).to_be_visible()
    expect(page.get_by_text(idp.entity_id, exact=True)).to_be_visible()
    acs = f"{origin}/accounts/saml/{SLUG}/acs/"
    expect(page.locator("#sp-acs")).to_have_text(acs)
    metadata_link = page.get_by_role("link", name="Download our SP metadata (XML)")
    expect(metadata_link).to_have_attribute("href", f"{origin}/accounts/saml/{SLUG}/metadata/?download=1")
    # Fetched by the page (the browser resolves *.localhost; the test process may not).
    sp_metadata = page.evaluate(
        "async (url) => { const answer = await fetch(url); return [answer.status, await answer.text()]; }",
        f"/accounts/saml/{SLUG}/metadata/?download=1",
    )
    assert sp_metadata[0] == 200 and acs in sp_metadata[1]
    tenant_connection().set_schema_to_public()
    stored = IdentityProvider.objects.get(organization=team)
    assert (stored.entity_id, stored.enabled, stored.default_role) == (idp.entity_id, True, "developer")
    expect(page.get_by_role("button", name=f"Require SSO for {DOMAIN}")).to_be_visible()
    screenshot(page, "sso-settings-configured")
    page.set_viewport_size({"width": 390, "height": 844})
    assert overflowing(page) <= 0
    page.set_viewport_size(DESKTOP)

    # A viewer: no navigation entry, no page, and a post made anyway is refused.
    viewer_context = browser.new_context(viewport=DESKTOP)
    try:
        viewer = viewer_context.new_page()
        viewer.set_default_timeout(15_000)
        _sign_in(viewer, origin, VIEWER, "/")
        viewer.wait_for_url(f"{origin}/")
        expect(viewer.get_by_role("link", name="Single sign-on")).to_have_count(0)
        answer = viewer.goto(f"{origin}/settings/sso/")
        assert answer is not None and answer.status == 403
        expect(viewer.get_by_role("button", name="Add domain")).to_have_count(0)
        expect(viewer.get_by_label("Identity provider metadata (XML)")).to_have_count(0)
        viewer.goto(f"{origin}/")
        status = viewer.evaluate(
            """async (domain) => {
                const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
                const body = new URLSearchParams({domain, csrfmiddlewaretoken: token});
                const answer = await fetch('/settings/sso/domains/', {method: 'POST', body});
                return answer.status;
            }""",
            f"sneaky-{RUN}.example",
        )
        assert status == 403
        tenant_connection().set_schema_to_public()
        assert list(SsoDomain.objects.filter(organization=team).values_list("domain", flat=True)) == [DOMAIN]
    finally:
        viewer_context.close()

    # Signed out, the sign-in page offers SSO, and the address's domain leads to this organization.
    signed_out = browser.new_context(viewport=DESKTOP)
    try:
        visitor = signed_out.new_page()
        visitor.set_default_timeout(15_000)
        visitor.goto(f"{sso_server.url}/accounts/login/")
        screenshot(visitor, "signin-page-with-sso")
        visitor.get_by_role("link", name="Sign in with SSO").click()
        expect(visitor.get_by_role("heading", name="Sign in with SSO")).to_be_visible()
        assert unlabeled_fields(visitor) == []
        visitor.get_by_label("Work email").fill(f"nobody@elsewhere-{RUN}.example")
        visitor.get_by_role("button", name="Continue with SSO").click()
        expect(
            visitor.get_by_text(f"Single sign-on isn't set up for elsewhere-{RUN}.example addresses")
        ).to_be_visible()
        screenshot(visitor, "sso-signin-not-found")
        visitor.get_by_label("Work email").fill(f"alice@{DOMAIN}")
        visitor.get_by_role("button", name="Continue with SSO").click()
        visitor.wait_for_url(f"{origin}/accounts/saml/{SLUG}/login/")
        # On the organization's own host the page offers its IdP directly.
        visitor.goto(f"{origin}/accounts/sso/")
        expect(visitor.get_by_role("link", name="Continue to SSO End to End's identity provider")).to_have_attribute(
            "href", f"{origin}/accounts/saml/{SLUG}/login/"
        )
        screenshot(visitor, "sso-signin-organization-host")
    finally:
        signed_out.close()

    # An owner on a plan without SSO: the page says so and offers no form.
    free_context = browser.new_context(viewport=DESKTOP)
    try:
        free = free_context.new_page()
        free.set_default_timeout(15_000)
        free_origin = sso_server.organization_url(FREE_SLUG)
        _sign_in(free, free_origin, FREE_OWNER, "/settings/sso/")
        free.wait_for_url(f"{free_origin}/settings/sso/")
        expect(free.get_by_text("The Free plan doesn't include single sign-on.")).to_be_visible()
        expect(free.locator("main form")).to_have_count(0)
        screenshot(free, "sso-settings-free-plan")
    finally:
        free_context.close()
