from __future__ import annotations

import logging
import re
import uuid

import kombu.exceptions
import redis
from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from psycopg import sql

from apps.accounts.principals import Principal
from apps.accounts.selectors import user_has_mfa
from apps.accounts.services import user_ensure
from apps.audit.services import audit_record
from apps.billing.selectors import UnknownPlan, plan_get
from apps.rbac.models import Role
from apps.rbac.permissions import Permission
from apps.rbac.selectors import membership_permissions
from apps.rbac.services import membership_create
from apps.tenants.cloning import schema_script_apply
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import SLUG_PATTERN, Domain, Organization, ReadySchema
from apps.tenants.selectors import organization_cache_forget
from apps.tenants.template import TEMPLATE_LOCK, template_ensure_current, template_script

logger = logging.getLogger(__name__)

_SLUG_RE = re.compile(SLUG_PATTERN)
# pg_advisory_xact_lock key (any fixed bigint): "redy" in ASCII. One refill at a time.
READY_REFILL_LOCK = 0x72656479
# By name: the task module imports this one.
READY_SCHEMAS_TASK = "apps.tenants.tasks.ready_schemas_keep_filled"


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

    The schema is a ready one, renamed, when one of the template's current migration state waits
    (`ready_schemas_refill`), else it is created by the template's rendered script (no migrations
    run, no catalog reads). Either happens in the same transaction as the rows: a failure at any
    step leaves no organization and no schema behind (and the ready schema ready). Its cost does not
    grow with the number of organizations.
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
            with connection.cursor() as cursor:
                # Waits while the template migrates (apps.tenants.template).
                cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [TEMPLATE_LOCK])
            script = template_script()
            organization = Organization.objects.create(
                schema_name=schema_name_for(slug), slug=slug, name=name, plan=plan, migration_state=script.fingerprint
            )
            if not _ready_schema_claim(fingerprint=script.fingerprint, target=organization.schema_name):
                with connection.cursor() as cursor:
                    schema_script_apply(cursor=cursor, statements=script.statements, target=organization.schema_name)
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
            if settings.TENANT_READY_SCHEMAS > 0:
                transaction.on_commit(_ready_schemas_refill_schedule)
    except IntegrityError as exc:
        if Organization.objects.filter(slug=slug).exists():
            raise ProvisioningError(f"slug {slug!r} is already taken") from exc
        raise
    return organization


def _ready_schema_claim(*, fingerprint: str, target: str) -> bool:
    """Rename a ready schema of the template's state `fingerprint` to `target`, in the caller's
    transaction (which holds the template lock shared, so that state is current). False when none
    is ready. Concurrent sign-ups skip each other's choice instead of waiting for it."""
    ready = (
        ReadySchema.objects.select_for_update(skip_locked=True).filter(fingerprint=fingerprint).order_by("id").first()
    )
    if ready is None:
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}")
            .format(sql.Identifier(ready.schema_name), sql.Identifier(target))
            .as_string()
        )
    ready.delete()
    return True


def _ready_schemas_refill_schedule() -> None:
    """After a sign-up's commit: a refill on its way. A broker outage costs only speed (the next
    sign-ups run the script; beat refills within its period), so it is logged, not raised."""
    try:
        current_app.send_task(READY_SCHEMAS_TASK)
    except (kombu.exceptions.KombuError, redis.RedisError, OSError):
        logger.warning("ready schemas refill not scheduled; beat will refill")


def ready_schemas_refill(*, size: int | None = None) -> int:
    """Build ready schemas until `size` (TENANT_READY_SCHEMAS) of the template's current migration
    state exist, and drop those of older states (never handed out: a sign-up asks for the current
    state). One schema per transaction, so a sign-up can take it as soon as it is built; one refill
    at a time (another returns at once). Returns how many were built."""
    size = settings.TENANT_READY_SCHEMAS if size is None else size
    template_ensure_current()
    built = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [READY_REFILL_LOCK])
            if not cursor.fetchone()[0]:
                return built
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [TEMPLATE_LOCK])
            script = template_script()
            stale = ReadySchema.objects.select_for_update(skip_locked=True).exclude(fingerprint=script.fingerprint)
            for ready in stale:
                cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(ready.schema_name)).as_string())
                ready.delete()
            if ReadySchema.objects.filter(fingerprint=script.fingerprint).count() >= size:
                return built
            name = f"ready_{uuid.uuid4().hex}"
            schema_script_apply(cursor=cursor, statements=script.statements, target=name)
            ReadySchema.objects.create(schema_name=name, fingerprint=script.fingerprint)
        built += 1


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


class OrganizationChangeRefused(Exception):
    """The actor may not change this organization setting; `code` names the rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _actor_may(*, organization: Organization, actor: Principal, permission: Permission) -> bool:
    if actor.kind == "system":
        return True
    if actor.kind in ("user", "operator") and actor.id is not None:
        # The current membership, not a request's (briefly cached) permissions.
        held = membership_permissions(user_id=int(actor.id), organization_id=organization.pk) or frozenset()
    else:
        held = actor.permissions or frozenset()
    return permission.value in held or Permission.ADMIN.value in held


@transaction.atomic
def organization_mfa_require_set(*, organization: Organization, required: bool, actor: Principal) -> Organization:
    """Require (or stop requiring) a second factor of every member of the organization."""
    if not _actor_may(organization=organization, actor=actor, permission=Permission.SECURITY_MANAGE):
        raise OrganizationChangeRefused(
            "permission_denied", f"this needs the {Permission.SECURITY_MANAGE.value} permission"
        )
    if (
        required
        and actor.kind in ("user", "operator")
        and actor.id is not None
        and not user_has_mfa(user_id=int(actor.id))
    ):
        # Otherwise the person turning it on is the first one locked out of the settings page.
        raise OrganizationChangeRefused("actor_without_mfa", "set up two-factor authentication for yourself first")
    organization = Organization.objects.select_for_update().get(pk=organization.pk)
    if organization.mfa_required == required:
        return organization
    organization.mfa_required = required
    organization.save(update_fields=["mfa_required", "updated_at"])
    # Other processes see the change within TENANT_RESOLUTION_CACHE_SECONDS.
    transaction.on_commit(lambda: organization_cache_forget(organization))
    audit_record(
        organization=organization,
        actor=actor,
        action="organization.mfa_required_changed",
        target=organization,
        metadata={"required": required},
    )
    return organization
