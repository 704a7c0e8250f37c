"""Invitations by email: created within the actor's role and the plan's members, sent with a link on
the organization's host, accepted once before expiry by the invited verified address, revocable;
over the REST API and the accept page, and never across organizations."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.accounts.services import email_verified_ensure
from apps.apikeys.services import apikey_create
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.rbac.permissions import role_permissions
from apps.rbac.services import custom_role_create
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import TEST_ACTOR, member_make, operator_admin_client, plan_make

_LINK = re.compile(r"https?://[^\s]+/invitations/[A-Za-z0-9_-]+/")


def _client(organization: Organization, user: User | None = None) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    if user is not None:
        client.force_login(user)
    return client


def _invite(client: Client, email: str, role: str = "developer") -> object:
    return client.post("/api/v1/invitations", {"email": email, "role": role}, content_type="application/json")


def _link_for(email: str) -> str:
    message = next(m for m in reversed(mail.outbox) if email in m.to)
    found = _LINK.search(str(message.body))
    assert found, message.body
    return found.group(0)


def _path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def _verified_user(email: str) -> User:
    user = User.objects.create_user(email=email, password="a long enough password 42")
    email_verified_ensure(user=user)
    return user


def _plan(organization: Organization, code: str = "enterprise") -> None:
    organization.plan = Plan.objects.get(code=code)
    organization.save(update_fields=["plan"])
    organization_cache_forget()


@pytest.fixture
def roomy(tenant: Organization) -> Organization:
    """The tenant on a plan with room for every member a test makes."""
    _plan(tenant)
    return tenant


def _audit_actions(organization: Organization) -> list[str]:
    with organization_schema(organization):
        return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def _error(response: object, status: int, code: str) -> None:
    assert getattr(response, "status_code", None) == status, getattr(response, "content", b"")
    assert response.json()["error"]["code"] == code  # type: ignore[attr-defined]


def test_an_owner_invites_and_the_invited_address_accepts_once(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    created = _invite(owner, "New.Person@Example.com", "billing")
    assert created.status_code == 201, created.content  # type: ignore[attr-defined]
    body = created.json()  # type: ignore[attr-defined]
    assert body["email"] == "new.person@example.com" and body["role"] == "billing" and body["state"] == "open"
    assert "token" not in body
    link = _link_for("new.person@example.com")
    assert link.startswith(f"http://{roomy.slug}.localhost/invitations/")
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert token not in Invitation.objects.get(pk=body["id"]).token_hash  # only a hash is stored

    listed = owner.get("/api/v1/invitations").json()["results"]
    assert [row["email"] for row in listed] == ["new.person@example.com"]

    invited = _verified_user("new.person@example.com")
    signed_out = _client(roomy)
    page = signed_out.get(_path(link))
    assert page.status_code == 200 and b"Sign in to accept" in page.content
    # Someone without an account follows the sign-up link on the organization's host: it carries the
    # invitation, prefills the address and asks for no organization of their own (followed through
    # in tests/portal/test_invite_signup.py).
    signup = re.search(r'href="(/accounts/signup/\?invitation=[^"]+)"', page.content.decode())
    assert signup, page.content
    form = Client(HTTP_HOST=f"{roomy.slug}.localhost").get(signup.group(1).replace("&amp;", "&"))
    assert 'value="new.person@example.com"' in form.content.decode()
    newcomer = _client(roomy, invited)
    assert b"Accept the invitation" in newcomer.get(_path(link)).content
    accepted = newcomer.post(_path(link))
    assert accepted.status_code == 302 and accepted["Location"] == "/"
    membership = Membership.objects.get(organization=roomy, user=invited)
    assert membership.role == Role.BILLING
    assert newcomer.get("/").status_code == 200

    again = newcomer.post(_path(link))  # single use
    assert again.status_code == 409 and Membership.objects.filter(organization=roomy, user=invited).count() == 1
    assert owner.get("/api/v1/invitations").json()["results"][0]["state"] == "accepted"
    actions = _audit_actions(roomy)
    assert actions.index("invitation.created") < actions.index("invitation.accepted")
    assert "membership.created" in actions


def test_the_plan_counts_members_and_open_invitations(tenant: Organization) -> None:
    plan_make(code="tiny", name="Tiny", max_members=3)
    _plan(tenant, "tiny")
    members = Membership.objects.filter(organization=tenant).count()
    owner = _client(tenant, member_make(organization=tenant, role=Role.OWNER))
    for number in range(3 - members - 1):
        assert _invite(owner, f"seat{number}@example.com").status_code == 201  # type: ignore[attr-defined]
    _error(_invite(owner, "one-too-many@example.com"), 403, "plan_limit_members")
    assert not Invitation.objects.filter(email="one-too-many@example.com").exists()
    # Revoking frees the seat.
    open_one = Invitation.objects.filter(organization=tenant, revoked_at__isnull=True).first()
    if open_one is not None:
        assert owner.post(f"/api/v1/invitations/{open_one.pk}/revoke").status_code == 200
        assert _invite(owner, "one-too-many@example.com").status_code == 201  # type: ignore[attr-defined]


def test_an_expired_invitation_is_refused_and_can_be_sent_again(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    assert _invite(owner, "late@example.com").status_code == 201  # type: ignore[attr-defined]
    link = _link_for("late@example.com")
    _error(_invite(owner, "late@example.com"), 409, "invitation_exists")
    Invitation.objects.filter(email="late@example.com").update(expires_at=timezone.now() - timedelta(seconds=1))
    late = _client(roomy, _verified_user("late@example.com"))
    refused = late.post(_path(link))
    assert refused.status_code == 409 and b"expired" in refused.content
    assert not Membership.objects.filter(organization=roomy, user__email="late@example.com").exists()
    assert _invite(owner, "late@example.com").status_code == 201  # type: ignore[attr-defined]


def test_another_address_can_not_accept(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    _invite(owner, "meant@example.com")
    link = _link_for("meant@example.com")
    someone_else = _client(roomy, _verified_user("someone.else@example.com"))
    refused = someone_else.post(_path(link))
    assert refused.status_code == 403 and b"meant@example.com" in refused.content
    # The right address, not yet verified, is refused too.
    unverified = User.objects.create_user(email="meant@example.com", password="a long enough password 42")
    assert _client(roomy, unverified).post(_path(link)).status_code == 403
    assert (
        Membership.objects.filter(
            organization=roomy, user__email__in=["meant@example.com", "someone.else@example.com"]
        ).count()
        == 0
    )
    # Signed out, posting is sent to sign in.
    assert _client(roomy).post(_path(link)).status_code == 302


def test_nobody_invites_above_their_role(roomy: Organization) -> None:
    admin = _client(roomy, member_make(organization=roomy, role=Role.ADMIN))
    _error(_invite(admin, "would-be-owner@example.com", "owner"), 403, "above_your_role")
    assert _invite(admin, "admin2@example.com", "admin").status_code == 201  # type: ignore[attr-defined]
    developer = _client(roomy, member_make(organization=roomy, role=Role.DEVELOPER))
    _error(_invite(developer, "x@example.com", "viewer"), 403, "permission_denied")
    assert developer.get("/api/v1/invitations").status_code == 200  # members:read
    viewer = _client(roomy, member_make(organization=roomy, role=Role.VIEWER))
    invitation = Invitation.objects.get(email="admin2@example.com")
    _error(viewer.post(f"/api/v1/invitations/{invitation.pk}/revoke"), 403, "permission_denied")


def test_a_revoked_invitation_can_not_be_accepted(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    invitation_id = _invite(owner, "revoked@example.com").json()["id"]  # type: ignore[attr-defined]
    link = _link_for("revoked@example.com")
    revoked = owner.post(f"/api/v1/invitations/{invitation_id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert _client(roomy, _verified_user("revoked@example.com")).post(_path(link)).status_code == 409
    assert "invitation.revoked" in _audit_actions(roomy)


def test_an_existing_member_is_not_invited(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    member = member_make(organization=roomy, role=Role.VIEWER)
    _error(_invite(owner, member.email.upper()), 409, "already_member")


def test_an_invitation_of_one_organization_is_unknown_to_another(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a, organization_b = two_tenants
    _plan(organization_a)
    _plan(organization_b)
    owner_a = _client(organization_a, member_make(organization=organization_a, role=Role.OWNER))
    owner_b_user = member_make(organization=organization_b, role=Role.OWNER)
    owner_b = _client(organization_b, owner_b_user)
    invitation_id = _invite(owner_a, "guest@example.com").json()["id"]  # type: ignore[attr-defined]
    path = _path(_link_for("guest@example.com"))

    # B's API neither lists nor revokes A's invitation.
    assert owner_b.get("/api/v1/invitations").json()["results"] == []
    assert owner_b.post(f"/api/v1/invitations/{invitation_id}/revoke").status_code == 404
    # A's token on B's host is an unknown link, and accepts nothing there.
    guest = _verified_user("guest@example.com")
    on_b = _client(organization_b, guest)
    assert on_b.get(path).status_code == 404
    assert on_b.post(path).status_code == 404
    assert not Membership.objects.filter(user=guest).exists()
    # B's owner can't use B's role ceiling to revoke it through the page either.
    assert owner_b.post(f"/members/invitations/{invitation_id}/revoke/").status_code == 404
    assert Invitation.objects.get(pk=invitation_id).revoked_at is None
    # On its own host it still works.
    assert _client(organization_a, guest).post(path).status_code == 302
    assert Membership.objects.filter(user=guest, organization=organization_a).exists()


@pytest.mark.parametrize("role", ["viewer", "developer"])
def test_invite_requires_members_manage_through_the_api(tenant: Organization, role: str) -> None:
    client = _client(tenant, member_make(organization=tenant, role=role))
    _error(_invite(client, "x@example.com"), 403, "permission_denied")


def _key_client(organization: Organization, scopes: list[str]) -> APIClient:
    issued = apikey_create(organization=organization, name="invites", actor=TEST_ACTOR, scopes=scopes)
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    return client


def test_an_api_key_invites_within_its_scopes(roomy: Organization) -> None:
    viewer_and_manager = [*sorted(p.value for p in role_permissions(Role.VIEWER)), "members:manage"]
    manager = _key_client(roomy, viewer_and_manager)
    created = manager.post("/api/v1/invitations", {"email": "by-key@example.com", "role": "viewer"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["invited_by"]
    # The link leads to the organization's host even when the key called the platform host.
    assert _link_for("by-key@example.com").startswith(f"http://{roomy.slug}.localhost/invitations/")
    # The key holds less than a Developer: inviting one is above it.
    _error(
        manager.post("/api/v1/invitations", {"email": "dev@example.com", "role": "developer"}, format="json"),
        403,
        "above_your_role",
    )
    reader = _key_client(roomy, ["jobs:read"])
    assert reader.get("/api/v1/invitations").status_code == 403
    assert (
        reader.post("/api/v1/invitations", {"email": "x@example.com", "role": "viewer"}, format="json").status_code
        == 403
    )


def test_accepting_with_a_verified_secondary_address(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    _invite(owner, "work@example.com")
    link = _link_for("work@example.com")
    person = _verified_user("personal@example.com")
    EmailAddress.objects.create(user=person, email="work@example.com", verified=True, primary=False)
    client = _client(roomy, person)
    assert b"Accept the invitation" in client.get(_path(link)).content
    assert client.post(_path(link)).status_code == 302
    assert Membership.objects.filter(organization=roomy, user=person, role=Role.DEVELOPER).exists()


def test_operators_see_invitations_in_the_admin_without_their_token(roomy: Organization) -> None:
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    invitation_id = _invite(owner, "listed@example.com").json()["id"]  # type: ignore[attr-defined]
    operator = User.objects.create_superuser(email="ops-invites@example.com", password="a-long-password-1")
    admin = operator_admin_client(operator)
    listed = admin.get("/admin/rbac/invitation/", {"q": roomy.slug})
    assert listed.status_code == 200 and b"listed@example.com" in listed.content
    detail = admin.get(f"/admin/rbac/invitation/{invitation_id}/change/")
    token_hash = Invitation.objects.get(pk=invitation_id).token_hash
    assert detail.status_code == 200 and token_hash.encode() not in detail.content


def test_an_invitation_to_a_custom_role(roomy: Organization) -> None:
    auditors = custom_role_create(organization=roomy, name="Auditors", permissions=["audit:read"], actor=TEST_ACTOR)
    owner = _client(roomy, member_make(organization=roomy, role=Role.OWNER))
    created = owner.post(
        "/api/v1/invitations",
        {"email": "auditor@example.com", "custom_role": auditors.pk},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["role"] == "" and created.json()["custom_role"]["name"] == "Auditors"
    _error(
        owner.post(
            "/api/v1/invitations", {"email": "y@example.com", "custom_role": 2**31 - 1}, content_type="application/json"
        ),
        400,
        "unknown_role",
    )
    # The portal offers it too, and the invitee gets that role.
    page = owner.get("/members/").content.decode()
    assert f'<option value="custom:{auditors.pk}">Auditors (custom)</option>' in page
    auditor = _verified_user("auditor@example.com")
    assert _client(roomy, auditor).post(_path(_link_for("auditor@example.com"))).status_code == 302
    assert Membership.objects.get(organization=roomy, user=auditor).custom_role_id == auditors.pk
