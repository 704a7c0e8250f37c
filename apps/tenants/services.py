from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction

from apps.accounts.principals import Principal
from apps.accounts.services import user_ensure
from apps.audit.services import audit_record
from apps.billing.selectors import UnknownPlan, plan_get
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.cloning import schema_clone
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import SLUG_PATTERN, Domain, Organization
from apps.tenants.selectors import organization_cache_forget
from apps.tenants.template import template_ensure_current, template_schema_name

_SLUG_RE = re.compile(SLUG_PATTERN)


def schema_name_for(slug: str) -> str:
    return "org_" + slug.replace("-", "_")


def slug_validate(slug: str) -> None:
    if not _SLUG_RE.match(slug) or "--" in slug:
        raise ProvisioningError(
            f"invalid slug {slug!r}: use 3 to 40 lowercase letters, digits and single hyphens, "
            "starting with a letter and ending with a letter or digit"
        )
    if slug in settings.RESERVED_SLUGS:
        raise ProvisioningError(f"slug {slug!r} is reserved")
    if Organization.objects.filter(slug=slug).exists():
        raise ProvisioningError(f"slug {slug!r} is already taken")


def organization_create(
    *, slug: str, name: str, owner_email: str, plan_code: str = "free", actor: Principal
) -> Organization:
    """Create an organization with a ready schema, its portal domain and its owner.

    The schema is cloned from the migrated template (no migrations run), in the same transaction
    as the rows: a failure at any step leaves no organization and no schema behind.
    """
    slug_validate(slug)
    name = name.strip()
    if not name:
        raise ProvisioningError("the organization needs a name")
    try:
        validate_email(owner_email)
    except ValidationError as exc:
        raise ProvisioningError(f"invalid owner email {owner_email!r}") from exc
    try:
        plan = plan_get(code=plan_code)
    except UnknownPlan as exc:
        raise ProvisioningError(str(exc)) from exc
    template_ensure_current()

    try:
        with transaction.atomic():
            organization = Organization.objects.create(
                schema_name=schema_name_for(slug), slug=slug, name=name, plan=plan
            )
            with connection.cursor() as cursor:
                schema_clone(cursor=cursor, source=template_schema_name(), target=organization.schema_name)
            Domain.objects.create(domain=f"{slug}.{settings.BASE_DOMAIN}", tenant=organization, is_primary=True)
            owner = user_ensure(email=owner_email)
            audit_record(
                organization=organization,
                actor=actor,
                action="organization.created",
                target=organization,
                metadata={"plan": plan.code, "name": name},
            )
            membership_create(user=owner, organization=organization, role=Role.OWNER, actor=actor)
    except IntegrityError as exc:
        if Organization.objects.filter(slug=slug).exists():
            raise ProvisioningError(f"slug {slug!r} is already taken") from exc
        raise
    return organization


@transaction.atomic
def organization_status_set(
    *, organization: Organization, status: Organization.Status, actor: Principal, reason: str = ""
) -> Organization:
    previous = organization.status
    if previous == status:
        return organization
    organization.status = status
    organization.save(update_fields=["status", "updated_at"])
    transaction.on_commit(lambda: organization_cache_forget(organization))
    audit_record(
        organization=organization,
        actor=actor,
        action="organization.status_changed",
        target=organization,
        metadata={"from": previous, "to": status, "reason": reason},
    )
    return organization
