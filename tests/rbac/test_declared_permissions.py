"""Every REST endpoint declares the permission each of its methods needs, and every role gets
exactly what the matrix (apps.rbac.permissions) gives it: walked over every URL pattern."""

from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings
from django.urls import resolve
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory as RequestFactory
from rest_framework.test import force_authenticate
from rest_framework.views import APIView

from apps.accounts.principals import Principal
from apps.api.permissions import HasDeclaredPermission, IsOrganizationMember, required_permission
from apps.apikeys.services import apikey_create
from apps.rbac.models import Membership, Role
from apps.rbac.permissions import ROLE_PERMISSIONS, Permission, permissions_expand, role_permissions
from apps.rbac.services import membership_role_change
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make
from tests.rbac.walk import PUBLIC_VIEWS, URLCONFS, api_endpoints, declared_endpoints


def _portal(organization: Organization, user: object) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)  # type: ignore[arg-type]
    return client


def _call(client: Client, method: str, path: str) -> object:
    # An empty body: an allowed write answers 400 (or 404 for an unknown id), never 403.
    return client.generic(method, path, json.dumps({}), content_type="application/json")


def _refused(response: object) -> bool:
    status = getattr(response, "status_code", None)
    if status != 403:
        return False
    body = json.loads(response.content)  # type: ignore[attr-defined]
    assert body["error"]["code"] == "permission_denied", body
    return True


def test_the_walk_finds_the_api() -> None:
    names = {endpoint.name for urlconf in URLCONFS for endpoint in api_endpoints(urlconf)}
    assert {"jobs", "agents", "workflows", "runs", "webhooks", "budgets", "budget"} <= names


@pytest.mark.parametrize("urlconf", URLCONFS)
def test_every_api_view_declares_a_permission_for_each_of_its_methods(urlconf: str) -> None:
    missing: list[str] = []
    for endpoint in api_endpoints(urlconf):
        view = endpoint.view(**endpoint.initkwargs)
        classes = {type(permission) for permission in view.get_permissions()}
        if endpoint.name in PUBLIC_VIEWS:
            assert classes == set(), f"{endpoint.route} is listed as public but checks {classes}"
            continue
        if not {IsOrganizationMember, HasDeclaredPermission} <= classes:
            missing.append(f"{endpoint.route}: permission classes {sorted(c.__name__ for c in classes)}")
        for method in endpoint.methods:
            needed = required_permission(view, method)
            if not isinstance(needed, Permission):
                missing.append(f"{method} {endpoint.route} ({endpoint.view.__name__}) declares no permission")
    assert not missing, "\n".join(missing)


class _HalfDeclaredApi(APIView):
    required_permissions = {"GET": Permission.JOBS_READ}

    def get(self, request: Request) -> Response:
        return Response({})

    def delete(self, request: Request) -> Response:  # declared nowhere: refused to everyone
        return Response(status=204)


def test_a_method_without_a_declaration_is_refused_and_a_missing_method_is_a_405(tenant: Organization) -> None:
    owner = member_make(organization=tenant, role=Role.OWNER)
    principal = Principal(kind="user", id=str(owner.pk), label="o", permissions=frozenset({"admin"}))

    def call(method: str) -> Response:
        request = RequestFactory().generic(method, "/", HTTP_HOST=f"{tenant.slug}.localhost")
        request.tenant = tenant  # type: ignore[attr-defined]
        force_authenticate(request, user=owner, token=principal)  # type: ignore[arg-type]
        return _HalfDeclaredApi.as_view()(request)

    assert call("GET").status_code == 200
    refused = call("DELETE")
    assert refused.status_code == 403 and refused.data["error"]["code"] == "permission_denied"
    assert refused.data["error"]["message"] == HasDeclaredPermission.message
    # PUT is no method of the budget detail: even a viewer learns it is not allowed, not forbidden.
    viewer = member_make(organization=tenant, role=Role.VIEWER)
    endpoint = next(endpoint for endpoint in declared_endpoints() if endpoint.name == "budget")
    answer = _call(_portal(tenant, viewer), "PUT", endpoint.path)
    assert getattr(answer, "status_code", None) == 405
    # Signed out, it is still a 401/403 before anything else.
    anonymous = Client(HTTP_HOST=f"{tenant.slug}.localhost").put(endpoint.path)
    assert anonymous.status_code in (401, 403)


@pytest.mark.parametrize("role", sorted(ROLE_PERMISSIONS))
def test_every_endpoint_answers_each_role_as_the_matrix_says(tenant: Organization, role: str) -> None:
    user = member_make(organization=tenant, role=role)
    client = _portal(tenant, user)
    granted = permissions_expand(role_permissions(role))
    wrong: list[str] = []
    calls = 0
    for endpoint in declared_endpoints():
        view = endpoint.view(**endpoint.initkwargs)
        for method in endpoint.methods:
            needed = required_permission(view, method)
            assert needed is not None
            response = _call(client, method, endpoint.path)
            calls += 1
            status = getattr(response, "status_code", 0)
            refused = _refused(response)
            if needed in granted and (refused or status in (401, 405) or status >= 500):
                wrong.append(f"{role}: {method} {endpoint.path} needs {needed} (held) but answered {status}")
            if needed not in granted and not refused:
                wrong.append(f"{role}: {method} {endpoint.path} needs {needed} (not held) but answered {status}")
    assert calls >= 30
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("role", sorted(ROLE_PERMISSIONS))
def test_budgets_follow_the_matrix_with_real_budgets(tenant: Organization, role: str) -> None:
    owner = _portal(tenant, member_make(organization=tenant, role=Role.OWNER))
    budget = owner.post(
        "/api/v1/budgets", {"scope": "organization", "period": "day", "limit_usd": "5"}, content_type="application/json"
    )
    assert budget.status_code == 201, budget.content
    client = _portal(tenant, member_make(organization=tenant, role=role))
    granted = permissions_expand(role_permissions(role))

    listed = client.get("/api/v1/budgets")
    assert (listed.status_code == 200) == (Permission.BUDGETS_READ in granted)
    created = client.post(
        "/api/v1/budgets",
        {"scope": "organization", "period": "month", "limit_usd": "50"},
        content_type="application/json",
    )
    deleted = client.delete(f"/api/v1/budgets/{budget.json()['id']}")
    if Permission.BUDGETS_MANAGE in granted:
        assert created.status_code == 201, created.content
        assert deleted.status_code == 204, deleted.content
    else:
        assert _refused(created) and _refused(deleted)
        assert owner.get(f"/api/v1/budgets/{budget.json()['id']}").status_code == 200


def test_viewer_and_developer_cannot_set_budgets_and_billing_can(tenant: Organization) -> None:
    body = {"scope": "organization", "period": "day", "limit_usd": "5"}
    viewer = _portal(tenant, member_make(organization=tenant, role=Role.VIEWER))
    developer = _portal(tenant, member_make(organization=tenant, role=Role.DEVELOPER))
    billing = _portal(tenant, member_make(organization=tenant, role=Role.BILLING))
    assert _refused(viewer.post("/api/v1/budgets", body, content_type="application/json"))
    assert _refused(developer.post("/api/v1/budgets", body, content_type="application/json"))
    assert developer.get("/api/v1/budgets").status_code == 200
    created = billing.post("/api/v1/budgets", body, content_type="application/json")
    assert created.status_code == 201
    assert _refused(viewer.delete(f"/api/v1/budgets/{created.json()['id']}"))
    assert billing.delete(f"/api/v1/budgets/{created.json()['id']}").status_code == 204


def test_a_role_change_takes_effect_on_the_next_request(tenant: Organization) -> None:
    user = member_make(organization=tenant, role=Role.DEVELOPER)
    client = _portal(tenant, user)
    assert client.post("/api/v1/jobs", {}, content_type="application/json").status_code == 400
    membership = Membership.objects.get(user=user, organization=tenant)
    membership_role_change(organization=tenant, membership=membership, role=Role.VIEWER, actor=TEST_ACTOR)
    assert _refused(client.post("/api/v1/jobs", {}, content_type="application/json"))
    assert client.get("/api/v1/jobs").status_code == 200


def test_a_member_of_one_organization_has_no_access_to_another(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a, organization_b = two_tenants
    owner_of_a = member_make(organization=organization_a, role=Role.OWNER)
    at_b = _portal(organization_b, owner_of_a)
    calls = 0
    for endpoint in declared_endpoints():
        for method in endpoint.methods:
            response = _call(at_b, method, endpoint.path)
            calls += 1
            assert _refused(response), (method, endpoint.path, getattr(response, "status_code", None))
    assert calls >= 30
    # At home the same person is an owner.
    assert _portal(organization_a, owner_of_a).get("/api/v1/budgets").status_code == 200


def test_the_path_samples_resolve_to_their_views() -> None:
    for endpoint in declared_endpoints():
        match = resolve(endpoint.path, urlconf=endpoint.urlconf)
        assert getattr(match.func, "cls", None) is endpoint.view, endpoint.path


def test_an_api_key_without_resolved_scopes_still_acts_as_before(
    two_tenants: tuple[Organization, Organization], api_client_for: object
) -> None:
    # Transitional until keys carry their scopes (HasDeclaredPermission): a key works everywhere.
    client = api_client_for(two_tenants[0])  # type: ignore[operator]
    created = client.post(
        "/api/v1/budgets", {"scope": "organization", "period": "day", "limit_usd": "5"}, format="json"
    )
    assert created.status_code == 201, created.content


def test_a_role_changed_elsewhere_is_seen_once_the_cache_lapses(tenant: Organization) -> None:
    user = member_make(organization=tenant, role=Role.DEVELOPER)
    client = _portal(tenant, user)
    assert client.post("/api/v1/jobs", {}, content_type="application/json").status_code == 400
    # As another process would: the row changes, this process's cache still holds the old role.
    Membership.objects.filter(user=user, organization=tenant).update(role=Role.VIEWER)
    assert client.post("/api/v1/jobs", {}, content_type="application/json").status_code == 400
    with override_settings(MEMBERSHIP_CACHE_SECONDS=0):
        assert _refused(client.post("/api/v1/jobs", {}, content_type="application/json"))


@pytest.mark.parametrize("scope", [permission.value for permission in Permission])
def test_every_endpoint_answers_a_key_of_each_scope_as_the_matrix_says(
    two_tenants: tuple[Organization, Organization], scope: str
) -> None:
    issued = apikey_create(organization=two_tenants[0], name=f"only {scope}", actor=TEST_ACTOR, scopes=[scope])
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    granted = permissions_expand(frozenset({Permission(scope)}))
    wrong: list[str] = []
    for endpoint in declared_endpoints("cognitionos.urls_public"):
        view = endpoint.view(**endpoint.initkwargs)
        for method in endpoint.methods:
            needed = required_permission(view, method)
            response = _call(client, method, endpoint.path)
            status = getattr(response, "status_code", 0)
            refused = _refused(response)
            if (needed in granted) == refused or status in (401, 405) or status >= 500:
                wrong.append(f"key [{scope}]: {method} {endpoint.path} needs {needed}: answered {status}")
    assert not wrong, "\n".join(wrong)
