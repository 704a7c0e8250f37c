from django.db import models
from django.db.models.functions import Upper
from django_tenants.models import DomainMixin, TenantMixin

SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$"


class Organization(TenantMixin):
    """A customer organization: the tenant, with its own PostgreSQL schema."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        PAST_DUE = "past_due", "Past due"
        DELETING = "deleting", "Being deleted"

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="organizations")
    # Security policy: every member signs in with a second factor (apps.portal.middleware). On the
    # organization row, so the tenant resolution that every request makes already carries it.
    mfa_required = models.BooleanField(default=False)
    # The migrations its schema holds, as `SchemaScript.fingerprint` of that set: written with each
    # migration it gets, in the same transaction, so `migrate` finds the schemas behind with one query.
    migration_state = models.CharField(max_length=64, blank=True, default="")
    # Set while a deletion is scheduled (status "deleting"): the schema and rows go at this time.
    deletion_due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Provisioning clones the template schema itself (apps.tenants.cloning); deletion is explicit.
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        ordering = ("slug",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["active", "suspended", "past_due", "deleting"]),
                name="tenants_organization_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(slug__regex=SLUG_PATTERN) & ~models.Q(slug__contains="--")
                | models.Q(schema_name="public"),
                name="tenants_organization_slug_dns_safe",
            ),
            models.CheckConstraint(
                condition=models.Q(deletion_due_at__isnull=True) | models.Q(status="deleting"),
                name="tenants_organization_deletion_due_only_when_deleting",
            ),
            # django-tenants refuses a new schema name equal to another but for case with
            # `schema_name__iexact` (UPPER = UPPER): this index answers it without a scan.
            models.UniqueConstraint(Upper("schema_name"), name="tenants_organization_schema_name_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_public(self) -> bool:
        return self.schema_name == "public"

    @property
    def email(self) -> str:
        """The Stripe customer's email (dj-stripe's subscriber needs one): the first owner's."""
        membership = self.memberships.filter(role="owner").select_related("user").order_by("id").first()
        return membership.user.email if membership is not None else ""

    @property
    def accepts_requests(self) -> bool:
        """Past-due organizations keep access while billing is sorted out; suspended ones don't."""
        return self.status in (self.Status.ACTIVE, self.Status.PAST_DUE)

    @property
    def accepts_jobs(self) -> bool:
        return self.status in (self.Status.ACTIVE, self.Status.PAST_DUE)


class SchemaScript(models.Model):
    """The template schema rendered as a fixed list of SQL statements, once per migration state.

    Provisioning runs these with the new schema's name filled in, reading nothing from the system
    catalogs (which hold every organization's relations and grow with their number)."""

    fingerprint = models.CharField(max_length=64, unique=True)
    migrations = models.JSONField()  # ["app.name", ...] the template held when rendered, sorted
    statements = models.JSONField()  # SQL with the placeholder __SCHEMA__ for the new schema's name
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fingerprint__regex=r"^[0-9a-f]{64}$"), name="tenants_schemascript_fingerprint_hex"
            )
        ]

    def __str__(self) -> str:
        return self.fingerprint[:12]


class ReadySchema(models.Model):
    """A schema built from the template's script ahead of any sign-up: creating an organization
    renames one (a catalog update, not 160 statements) when one of the template's current migration
    state is ready. `ready_schemas_refill` keeps a few ready; those of an older state are dropped."""

    schema_name = models.CharField(max_length=63, unique=True)
    fingerprint = models.CharField(max_length=64, db_index=True)  # the SchemaScript it was built from
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Never a name an organization's schema could have (those start with "org_").
            models.CheckConstraint(
                condition=models.Q(schema_name__regex=r"^ready_[0-9a-f]{32}$"), name="tenants_readyschema_name"
            ),
            models.CheckConstraint(
                condition=models.Q(fingerprint__regex=r"^[0-9a-f]{64}$"), name="tenants_readyschema_fingerprint_hex"
            ),
        ]

    def __str__(self) -> str:
        return self.schema_name


class Domain(DomainMixin):
    """A host name that serves one organization's portal (its <slug>.<BASE_DOMAIN>, or a custom one)."""

    def __str__(self) -> str:
        return self.domain
