"""The audit log's filters, shared by the REST API and the portal's page (a django-filter FilterSet:
`AuditEventFilter(request.GET, queryset=...)`, whose `.form` renders the fields)."""

from __future__ import annotations

import django_filters

from apps.api.filters import UtcIsoDateTimeFilter
from apps.audit.models import AuditEvent

ACTOR_KINDS = ("user", "api_key", "operator", "system")


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter(help_text="Exactly this action (`job.submitted`)")
    action_prefix = django_filters.CharFilter(
        field_name="action", lookup_expr="startswith", help_text="Actions starting with this (`job.`)"
    )
    actor_kind = django_filters.ChoiceFilter(choices=[(kind, kind) for kind in ACTOR_KINDS])
    actor_id = django_filters.CharFilter(help_text="A user's or an API key's id")
    actor = django_filters.CharFilter(field_name="actor_label", help_text="The actor's label (an email, a key's name)")
    target_type = django_filters.CharFilter(help_text="The target's kind (`jobs.Job`)")
    target_id = django_filters.CharFilter()
    occurred_after = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields: tuple[str, ...] = ()
