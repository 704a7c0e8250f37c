"""Sent when what an organization may do can have changed (its plan version, subscription state or
status): every app that caches something derived from the plan forgets it (apps.tenants' resolved
organizations, apps.rbac's memberships, apps.llm's plan budget). Billing sits below those apps, so
it announces instead of calling them. `organization` is None when every organization may be
affected (an operator edited a plan version)."""

from django.dispatch import Signal

entitlements_changed = Signal()  # kwargs: organization (Organization | None)
