"""The portal's check (apps.rbac.decorators) answers as the matrix says, like the API's."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from apps.accounts.models import User
from apps.rbac.decorators import member_may, member_permissions, permission_required
from apps.rbac.models import Role
from apps.rbac.permissions import ROLE_PERMISSIONS, Permission, permissions_expand, role_permissions
from apps.tenants.models import Organization
from tests.factories import member_make


@permission_required({"GET": Permission.BUDGETS_READ, "POST": Permission.BUDGETS_MANAGE})
def budgets_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _request(method: str, organization: Organization, user: User | AnonymousUser) -> HttpRequest:
    request = RequestFactory().generic(method, "/budgets", HTTP_HOST=f"{organization.slug}.localhost")
    request.tenant = organization  # type: ignore[attr-defined]
    request.user = user
    return request


@pytest.mark.parametrize("role", sorted(ROLE_PERMISSIONS))
def test_a_portal_view_answers_each_role_as_the_matrix_says(tenant: Organization, role: str) -> None:
    user = member_make(organization=tenant, role=role)
    granted = permissions_expand(role_permissions(role))
    for method, needed in budgets_page.required_permissions.items():  # type: ignore[attr-defined]
        if needed in granted:
            assert budgets_page(_request(method, tenant, user)).status_code == 200
        else:
            with pytest.raises(PermissionDenied):
                budgets_page(_request(method, tenant, user))
    assert member_may(_request("GET", tenant, user), Permission.BUDGETS_MANAGE) == (
        Permission.BUDGETS_MANAGE in granted
    )


def test_an_undeclared_method_is_refused_and_a_stranger_too(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = two_tenants
    owner_of_a = member_make(organization=organization_a, role=Role.OWNER)
    with pytest.raises(PermissionDenied):
        budgets_page(_request("DELETE", organization_a, owner_of_a))
    with pytest.raises(PermissionDenied):
        budgets_page(_request("GET", organization_b, owner_of_a))
    assert member_permissions(_request("GET", organization_b, owner_of_a)) == frozenset()


def test_someone_signed_out_is_sent_to_sign_in(tenant: Organization) -> None:
    response = budgets_page(_request("GET", tenant, AnonymousUser()))
    assert response.status_code == 302 and "next=/budgets" in response["Location"]
