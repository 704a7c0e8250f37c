"""First sign-ins at once, committed (two browsers, two threads, their own database connections):
one account and one membership, no error."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.billing.models import Plan
from apps.rbac.models import Membership
from apps.sso.models import SsoDomain
from apps.sso.services import identity_provider_configure
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR, organization_purge
from tests.sso.idp import Assertion, TestIdp, encoded

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"sso-race-{RUN}"
DOMAIN = f"race-{RUN}.example"
PERSON = f"first@{DOMAIN}"


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    plan = Plan.objects.create(code=f"sso-race-{RUN}", name="SSO race", limits={"sso": True, "max_members": 10})
    created = live_db.organization(slug=SLUG)
    tenant_connection().set_schema_to_public()
    created.plan = plan
    created.save(update_fields=["plan"])
    SsoDomain.objects.create(
        organization=created, domain=DOMAIN, verification_token="r" * 32, verified_at=timezone.now(), verified_by="dns"
    )
    identity_provider_configure(
        organization=created,
        actor=TEST_ACTOR,
        metadata_xml=TestIdp("race").metadata_xml(),
        enabled=True,
        allow_idp_initiated=True,
        default_role="viewer",
    )
    yield created
    tenant_connection().set_schema_to_public()
    User.objects.filter(email__in=[PERSON, f"owner@{SLUG}.example.com"]).delete()
    live_db.created.remove(created)
    organization_purge(created)
    plan.delete()


def test_two_first_sign_ins_of_one_person_at_once_make_one_account(organization: Organization) -> None:
    idp = TestIdp("race")
    host = f"{SLUG}.localhost"
    origin = f"http://{host}/accounts/saml/{SLUG}"
    responses = [
        encoded(idp.response(Assertion(sp_entity_id=f"{origin}/metadata/", acs_url=f"{origin}/acs/", email=PERSON)))
        for _ in range(4)
    ]
    start = threading.Barrier(len(responses))
    outcomes: list[int | str] = []

    def sign_in(saml_response: str) -> None:
        browser = Client(HTTP_HOST=host)
        try:
            start.wait()
            posted = browser.post(f"/accounts/saml/{SLUG}/acs/", {"SAMLResponse": saml_response})
            outcomes.append(browser.get(posted["Location"]).status_code)
        except Exception as exc:  # noqa: BLE001 -- the test reports what went wrong in the thread
            outcomes.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=sign_in, args=(response,)) for response in responses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes == [302] * len(responses)
    tenant_connection().set_schema_to_public()
    assert User.objects.filter(email__iexact=PERSON).count() == 1
    assert Membership.objects.filter(organization=organization, user__email=PERSON).count() == 1
