"""The platform's own records (public schema): what operators did, and their support access.

An organization's own audit log (apps.audit, in its schema) gets the same events; these rows are the
platform's side, readable without entering any tenant schema and kept when an organization is gone.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

# The longest support access an operator may ask for (bounded in the database too).
SUPPORT_ACCESS_MAX = timedelta(hours=8)


class OperatorAction(models.Model):
    """One operator (or platform) action: append-only, written by `operator_action_record`."""

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=100)
    # SET_NULL: the operator log outlives a deleted organization; its slug stays readable.
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    organization_slug = models.CharField(max_length=40, blank=True)
    target = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=1000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-occurred_at", "-id")
        indexes = [
            models.Index(fields=["organization", "-occurred_at"], name="ops_opaction_org_time"),
            models.Index(fields=["action", "-occurred_at"], name="ops_opaction_action_time"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(action=""), name="ops_operatoraction_action_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"


class SupportAccessGrant(models.Model):
    """Time-limited, read-only access of one staff user to one organization's portal.

    Active while now < expires_at and not revoked; checked on every use (no sweeper needed).
    """

    operator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="support_grants")
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="support_grants")
    reason = models.CharField(max_length=1000)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    first_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["operator", "organization", "-expires_at"], name="ops_grant_lookup"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(reason=""), name="ops_supportgrant_reason_not_empty"),
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at"))
                & models.Q(expires_at__lte=models.F("created_at") + SUPPORT_ACCESS_MAX),
                name="ops_supportgrant_duration_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operator_id}@{self.organization_id} until {self.expires_at:%Y-%m-%d %H:%M}"

    def is_active(self, now: timezone.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.created_at <= now < self.expires_at
