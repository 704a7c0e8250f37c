"""The platform's own records (public schema): what operators did, and their support access.

An organization's own audit log (apps.audit, in its schema) gets the same events; these rows are the
platform's side, readable without entering any tenant schema and kept when an organization is gone.
"""

from __future__ import annotations

import datetime as dt
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

    def is_active(self, now: dt.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.created_at <= now < self.expires_at


class Anomaly(models.Model):
    """A series that left its normal range (apps.ops.anomalies): opened and resolved by the beat
    task, with what was seen, against what, and what was done about it, for operators to read."""

    class Kind(models.TextChoices):
        DEPLOYMENT_LATENCY = "deployment_latency", "Deployment latency"
        DEPLOYMENT_ERRORS = "deployment_errors", "Deployment error rate"
        DEPLOYMENT_COST = "deployment_cost", "Deployment cost per request"
        ORGANIZATION_SPEND = "organization_spend", "Organization spend rate"

    kind = models.CharField(max_length=30, choices=Kind.choices)
    subject = models.CharField(max_length=200, help_text='"provider/model", or an organization\'s slug.')
    # CASCADE: an organization's anomalies go with its public rows when it is purged.
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    unit = models.CharField(max_length=30, blank=True)
    observed = models.FloatField(help_text="The value that opened it.")
    baseline = models.FloatField(help_text="The series' normal level then.")
    threshold = models.FloatField(help_text="The line it crossed.")
    peak = models.FloatField(help_text="The highest value seen while open.")
    last_value = models.FloatField(help_text="The latest value seen.")
    explanation = models.TextField()
    action = models.TextField(blank=True, help_text="What was done about it (empty: flagged only).")

    class Meta:
        ordering = ("-opened_at", "-id")
        indexes = [models.Index(fields=["-opened_at"], name="ops_anomaly_opened")]
        constraints = [
            # One open anomaly per series; the partial index also serves the open counts per kind.
            models.UniqueConstraint(
                fields=["kind", "subject"], condition=models.Q(resolved_at=None), name="ops_anomaly_one_open"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    kind__in=["deployment_latency", "deployment_errors", "deployment_cost", "organization_spend"]
                ),
                name="ops_anomaly_kind_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(resolved_at=None) | models.Q(resolved_at__gte=models.F("opened_at")),
                name="ops_anomaly_resolved_after_opened",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} {self.opened_at:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
