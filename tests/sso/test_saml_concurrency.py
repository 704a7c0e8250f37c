"""First sign-ins at once, committed (two browsers, two threads, their own database connections):
one account and one membership, no error."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client

from apps.accounts.models import User
from apps.rbac.models import Membership
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.sso.idp import Assertion, TestIdp, encoded
from tests.sso.saml_setup import sso_organization_committed

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"sso-race-{RUN}"
DOMAIN = f"race-{RUN}.example"
PERSON = f"first@{DOMAIN}"


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    with sso_organization_committed(
        live_db, slug=SLUG, domain=DOMAIN, idp=TestIdp("race"), allow_idp_initiated=True, people=(PERSON,)
    ) as sso:
        yield sso.organization


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
