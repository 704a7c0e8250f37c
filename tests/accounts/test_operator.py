"""The operator `make run` creates owns the demo organization and signs in through the portal,
where email verification is mandatory: its address is verified when it is made."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django.test import Client

from apps.accounts.models import User
from apps.accounts.services import operator_ensure


def test_operator_address_is_verified_and_the_operator_can_sign_in(db: None) -> None:
    operator, password = operator_ensure(email="Operator@Example.com")
    assert password is not None
    address = EmailAddress.objects.get(user=operator)
    assert (address.email, address.verified, address.primary) == ("operator@example.com", True, True)
    response = Client(HTTP_HOST="localhost").post(
        "/accounts/login/", {"login": "operator@example.com", "password": password}
    )
    assert response.status_code == 302 and response["Location"] == "/enter/"


def test_existing_operator_without_an_address_gets_a_verified_one(db: None) -> None:
    User.objects.create_user(email="old-operator@example.com", password="x" * 20)
    operator, password = operator_ensure(email="old-operator@example.com")
    assert password is None
    assert EmailAddress.objects.get(user=operator).verified
