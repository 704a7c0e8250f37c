"""Plain factory functions for test data."""

from __future__ import annotations

import uuid

from django.db import connection, transaction
from psycopg import sql

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.models import CustomRole, Role
from apps.rbac.services import membership_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.services import organization_create

TEST_ACTOR = Principal.system("tests")


def organization_make(*, slug: str, name: str = "", plan_code: str = "free", owner_email: str = "") -> Organization:
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
