from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from apps.rbac.permissions import Permission

# Every scope a key may hold is a permission of apps.rbac.permissions; the database refuses others.
# A permission added there needs a migration here (makemigrations notices the changed constraint).
SCOPE_VALUES = sorted(permission.value for permission in Permission)


class ApiKey(models.Model):
    """A secret that lets a program act for one organization. Only a keyed hash is stored.

    The key reads `cos_<prefix>_<secret>`; the prefix finds the row, the hash proves the secret.
    Its scopes are permissions (`admin` stands for all); a key bound to a user is revoked when that
    user leaves the organization or no longer holds every scope of the key.
    """

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = ArrayField(models.CharField(max_length=32), help_text="Permissions the key grants (apps.rbac).")
    # Deleting the person deletes their bound keys: a key never outlives the access it stood for.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )
    created_by_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Written in batches (apps.apikeys.usage), never once per request: late by up to a flush interval.
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scopes__len__gt=0) & models.Q(scopes__contained_by=SCOPE_VALUES),
                name="apikeys_apikey_scopes_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (cos_{self.prefix}_…)"

    @property
    def label(self) -> str:
        return f"{self.name} (cos_{self.prefix})"
