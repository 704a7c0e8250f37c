from django.db import models


class ApiKey(models.Model):
    """A secret that lets a program act for one organization. Only a keyed hash is stored.

    The key reads `cos_<prefix>_<secret>`; the prefix finds the row, the hash proves the secret.
    """

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_by_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} (cos_{self.prefix}_…)"

    @property
    def label(self) -> str:
        return f"{self.name} (cos_{self.prefix})"
