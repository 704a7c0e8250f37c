from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from apps.rbac.permissions import Permission


class Role(models.TextChoices):
    """Built-in roles; their permissions are apps.rbac.permissions.ROLE_PERMISSIONS."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    BILLING = "billing", "Billing"
    VIEWER = "viewer", "Viewer"


class CustomRole(models.Model):
    """An organization's own role: a name and a set of permissions (plans with `custom_roles`)."""

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="custom_roles")
    name = models.CharField(max_length=60)
    permissions = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="rbac_customrole_name_unique"),
            # Only permissions the matrix knows: a typo stored here would silently grant nothing.
            models.CheckConstraint(
                condition=models.Q(permissions__contained_by=[permission.value for permission in Permission]),
                name="rbac_customrole_permissions_known",
            ),
            models.CheckConstraint(condition=~models.Q(name=""), name="rbac_customrole_name_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.name}"


class Membership(models.Model):
    """A user's role in one organization (public schema: people span organizations).

    The role is a built-in one (`role`) or the organization's custom role (`custom_role`, with
    `role` empty), never both.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.DEVELOPER, blank=True)
    # PROTECT: a custom role in use is reassigned before it is deleted, never dropped silently.
    custom_role = models.ForeignKey(
        CustomRole, on_delete=models.PROTECT, null=True, blank=True, related_name="memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="rbac_membership_unique"),
            models.CheckConstraint(condition=models.Q(role__in=[*Role.values, ""]), name="rbac_membership_role_valid"),
            models.CheckConstraint(
                condition=(
                    models.Q(custom_role__isnull=True) & ~models.Q(role="")
                    | models.Q(custom_role__isnull=False) & models.Q(role="")
                ),
                name="rbac_membership_one_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organization_id}:{self.role or self.custom_role_id}"


class Invitation(models.Model):
    """An invitation by email to join an organization with a role (public schema, like memberships).

    Only a hash of the token is stored: the link in the email is the one place the token exists.
    An invitation is open until accepted, revoked or past `expires_at`; at most one open (not
    accepted, not revoked) invitation per organization and address.
    """

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)  # stored lowercased
    role = models.CharField(max_length=20, choices=Role.choices, blank=True)
    # An invitation to a role that no longer exists is void: it goes with the role.
    custom_role = models.ForeignKey(
        CustomRole, on_delete=models.CASCADE, null=True, blank=True, related_name="invitations"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.CharField(max_length=254, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The account made by a sign-up through this invitation's link: the invitation is accepted for
    # it once it verifies the invited address, in whichever browser (apps.portal.receivers).
    followed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="rbac_invitation_one_open_per_email",
            ),
            models.CheckConstraint(condition=models.Q(role__in=[*Role.values, ""]), name="rbac_invitation_role_valid"),
            models.CheckConstraint(
                condition=(
                    models.Q(custom_role__isnull=True) & ~models.Q(role="")
                    | models.Q(custom_role__isnull=False) & models.Q(role="")
                ),
                name="rbac_invitation_one_role",
            ),
            models.CheckConstraint(
                condition=models.Q(accepted_at__isnull=True) | models.Q(revoked_at__isnull=True),
                name="rbac_invitation_not_accepted_and_revoked",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.email}"
