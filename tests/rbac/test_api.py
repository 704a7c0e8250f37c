"""/api/v1/members and /api/v1/roles: the membership rules over HTTP, in the API's error shape."""

from __future__ import annotations

from django.test import Client

from apps.accounts.models import User
from apps.billing.models import Plan
from apps.rbac.models import Membership, Role
from apps.rbac.permissions import role_permissions
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make


def _portal(organization: Organization, user: User) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)
    return client


def _id(user: User, organization: Organization) -> int:
    return Membership.objects.get(user=user, organization=organization).pk


def _error(response: object, status: int, code: str) -> None:
    assert getattr(response, "status_code", None) == status, getattr(response, "content", b"")
    assert response.json()["error"]["code"] == code  # type: ignore[attr-defined]


def test_an_owner_changes_roles_and_removes_members(tenant: Organization) -> None:
    owner = _portal(tenant, member_make(organization=tenant, role=Role.OWNER))
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    listed = owner.get("/api/v1/members")
    assert listed.status_code == 200
    row = next(row for row in listed.json()["results"] if row["email"] == developer.email)
    assert row["role"] == "developer" and "jobs:write" in row["permissions"] and row["custom_role"] is None
    changed = owner.patch(f"/api/v1/members/{row['id']}", {"role": "billing"}, content_type="application/json")
    assert changed.status_code == 200 and changed.json()["role"] == "billing"
    assert "budgets:manage" in changed.json()["permissions"]
    assert owner.delete(f"/api/v1/members/{row['id']}").status_code == 204
    assert owner.get(f"/api/v1/members/{row['id']}").status_code == 404


def test_the_rules_answer_in_the_api_shape(tenant: Organization) -> None:
    only_owner = Membership.objects.get(organization=tenant, role=Role.OWNER)
    owner = _portal(tenant, only_owner.user)
    _error(
        owner.patch(f"/api/v1/members/{only_owner.pk}", {"role": "admin"}, content_type="application/json"),
        409,
        "last_owner",
    )
    admin = _portal(tenant, member_make(organization=tenant, role=Role.ADMIN))
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    _error(
        admin.patch(f"/api/v1/members/{_id(developer, tenant)}", {"role": "owner"}, content_type="application/json"),
        403,
        "above_your_role",
    )
    _error(admin.delete(f"/api/v1/members/{only_owner.pk}"), 403, "above_your_role")
    viewer = _portal(tenant, member_make(organization=tenant, role=Role.VIEWER))
    assert viewer.get("/api/v1/members").status_code == 200
    _error(
        viewer.patch(f"/api/v1/members/{_id(developer, tenant)}", {"role": "viewer"}, content_type="application/json"),
        403,
        "permission_denied",
    )
    _error(
        admin.patch(f"/api/v1/members/{_id(developer, tenant)}", {"role": "chief"}, content_type="application/json"),
        400,
        "invalid_request",
    )


def test_a_refused_change_answers_with_the_whole_error_body(tenant: Organization) -> None:
    """The service's refusal carries status, code, message and the field (role) the change is about."""
    only_owner = Membership.objects.get(organization=tenant, role=Role.OWNER)
    owner = _portal(tenant, only_owner.user)
    changed = owner.patch(f"/api/v1/members/{only_owner.pk}", {"role": "admin"}, content_type="application/json")
    assert changed.status_code == 409
    assert changed.json() == {
        "error": {
            "message": "the organization must keep an owner: make someone else owner first",
            "type": "conflict_error",
            "code": "last_owner",
            "param": "role",
        }
    }
    removed = owner.delete(f"/api/v1/members/{only_owner.pk}")  # no field is at fault in a removal
    assert removed.status_code == 409 and removed.json()["error"]["param"] is None
    absent = owner.get(f"/api/v1/members/{only_owner.pk + 10_000}")
    assert absent.status_code == 404
    assert absent.json() == {
        "error": {
            "message": "no such object in this organization",
            "type": "not_found_error",
            "code": "not_found",
            "param": None,
        }
    }


def test_members_of_another_organization_are_absent(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = two_tenants
    owner_of_a = _portal(organization_a, member_make(organization=organization_a, role=Role.OWNER))
    member_of_b = member_make(organization=organization_b, role=Role.DEVELOPER)
    in_b = _id(member_of_b, organization_b)
    assert owner_of_a.get(f"/api/v1/members/{in_b}").status_code == 404
    assert (
        owner_of_a.patch(f"/api/v1/members/{in_b}", {"role": "viewer"}, content_type="application/json").status_code
        == 404
    )
    assert owner_of_a.delete(f"/api/v1/members/{in_b}").status_code == 404
    assert member_of_b.email not in {row["email"] for row in owner_of_a.get("/api/v1/members").json()["results"]}
    assert Membership.objects.get(pk=in_b).role == Role.DEVELOPER


def test_custom_roles_over_the_api(tenant: Organization) -> None:
    owner_user = member_make(organization=tenant, role=Role.OWNER)
    owner = _portal(tenant, owner_user)
    body = {"name": "Auditors", "permissions": ["audit:read", "jobs:read"]}
    _error(owner.post("/api/v1/roles", body, content_type="application/json"), 403, "plan_limit")
    tenant.plan = Plan.objects.get(code="enterprise")
    tenant.save(update_fields=["plan"])
    organization_cache_forget()
    created = owner.post("/api/v1/roles", body, content_type="application/json")
    assert created.status_code == 201, created.content
    role_id = created.json()["id"]
    _error(owner.post("/api/v1/roles", body, content_type="application/json"), 409, "duplicate_name")
    _error(
        owner.post("/api/v1/roles", {"name": "X", "permissions": ["jobs:raed"]}, content_type="application/json"),
        400,
        "unknown_permission",
    )
    roles = owner.get("/api/v1/roles").json()
    viewer_role = next(role for role in roles["built_in"] if role["role"] == "viewer")
    assert viewer_role["permissions"] == sorted(permission.value for permission in role_permissions("viewer"))
    assert [role["name"] for role in roles["custom"]] == ["Auditors"]
    member = member_make(organization=tenant, role=Role.VIEWER)
    given = owner.patch(
        f"/api/v1/members/{_id(member, tenant)}", {"custom_role": role_id}, content_type="application/json"
    )
    assert given.status_code == 200 and given.json()["custom_role"]["name"] == "Auditors"
    assert given.json()["role"] == "" and given.json()["permissions"] == ["audit:read", "jobs:read"]
    # The member now reads the audit log and jobs, and nothing else.
    as_member = _portal(tenant, member)
    assert as_member.get("/api/v1/jobs").status_code == 200
    assert as_member.get("/api/v1/budgets").status_code == 403
    _error(owner.delete(f"/api/v1/roles/{role_id}"), 409, "role_in_use")
    narrowed = owner.patch(f"/api/v1/roles/{role_id}", {"permissions": ["jobs:read"]}, content_type="application/json")
    assert narrowed.status_code == 200 and narrowed.json()["permissions"] == ["jobs:read"]
    owner.patch(f"/api/v1/members/{_id(member, tenant)}", {"role": "viewer"}, content_type="application/json")
    assert owner.delete(f"/api/v1/roles/{role_id}").status_code == 204
