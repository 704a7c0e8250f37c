"""Plain factory functions for test data."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.test import Client
from psycopg import sql

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.billing.models import OrganizationPlanPeriod, Plan, PlanVersion
from apps.rbac.models import CustomRole, Role
from apps.rbac.services import membership_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.services import organization_create

TEST_ACTOR = Principal.system("tests")


# What a plan version gives when a test doesn't say: Free's numbers, every feature, overage billed
# (so no platform hard budget). The suite's organizations are on it ("suite"); tests of what a plan
# refuses make their own plan (plan_make) or use Free.
PLAN_DEFAULTS: dict[str, Any] = {
    "included_usage_usd": Decimal("5.00"),
    "overage_allowed": True,
    "overage_price_per_usd": Decimal("1.0000"),
    "max_members": 3,
    "max_api_keys": None,
    "requests_per_minute": 60,
    "tokens_per_minute": 100_000,
    "max_concurrent_jobs": 2,
    "max_concurrent_runs": 2,
    "max_map_items": 100,
    "max_retention_days": 3650,
    "sso": False,
    "custom_roles": False,
    "byok": True,
    "semantic_cache": True,
    "audit_export": True,
    "webhooks": True,
}


def plan_make(*, code: str, name: str = "", **values: Any) -> Plan:
    """A plan with one version: PLAN_DEFAULTS with `values` over them (max_members=2, sso=True...).
    An existing plan of that code is returned as it is."""
    plan, created = Plan.objects.get_or_create(code=code, defaults={"name": name or code.title(), "public": False})
    if created or not plan.versions.exists():
        PlanVersion.objects.create(plan=plan, number=1, **{**PLAN_DEFAULTS, **values})
    return plan


def plan_purge(plan: Plan) -> None:
    """Delete a plan a test made, with its versions and the periods that named them."""
    OrganizationPlanPeriod.objects.filter(plan_version__plan=plan).delete()
    PlanVersion.objects.filter(plan=plan).delete()
    plan.delete()


def organization_make(*, slug: str, name: str = "", plan_code: str = "suite", owner_email: str = "") -> Organization:
    if plan_code == "suite":
        plan_make(code="suite", name="Suite")
    return organization_create(
        slug=slug,
        name=name or slug.title(),
        owner_email=owner_email or f"owner@{slug}.example.com",
        plan_code=plan_code,
        actor=TEST_ACTOR,
    )


def member_make(*, organization: Organization, role: Role | str | CustomRole = Role.DEVELOPER, email: str = "") -> User:
    """A user who is a member of the organization with that role (built-in or custom)."""
    label = role.name if isinstance(role, CustomRole) else str(role)
    user = User.objects.create_user(email=email or f"{label}-{uuid.uuid4().hex[:8]}@{organization.slug}.example.com")
    membership_create(user=user, organization=organization, role=role, actor=TEST_ACTOR)
    tenant_connection().set_schema_to_public()
    return user


def organization_purge(organization: Organization) -> None:
    """Remove an organization created by a committed test: its schema and its public rows."""
    tenant_connection().set_schema_to_public()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(organization.schema_name)).as_string()
        )
        Organization.objects.filter(pk=organization.pk).delete()


def operator_admin_client(user: User, *, host: str = "localhost") -> Client:
    """A client signed in to the operators' admin as `user` (staff), with a confirmed second factor
    and a session that used it, as the admin requires (apps.ops.admin_site)."""
    import time

    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    if not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
        TOTP.activate(user, generate_totp_secret())
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    # What allauth records when a session passes the second factor (sign-in or reauthentication).
    session = client.session
    session["account_authentication_methods"] = [{"method": "mfa", "at": time.time(), "type": "totp"}]
    session["account_authentication_methods_user"] = str(user.pk)
    session.save()
    return client
