"""The admin application, configured for operators (in INSTALLED_APPS instead of
"django.contrib.admin"): its default site is apps.ops.admin_site.OperatorAdminSite."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class OperatorAdminConfig(AdminConfig):
    default_site = "apps.ops.admin_site.OperatorAdminSite"

    def ready(self) -> None:
        super().ready()
        # Operators' support access acts as a read-only membership on the granted organization's
        # host (apps.rbac asks its registered sources about people who are not members).
        from apps.ops.services import support_access_permissions
        from apps.rbac.decorators import member_permissions_source_register

        member_permissions_source_register(support_access_permissions)
