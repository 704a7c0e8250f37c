from typing import Any

from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

from apps.tenants.checks import database_require_extensions
from apps.tenants.template import template_migrate


class Command(MigrateSchemasCommand):
    """django-tenants' migrate_schemas, which also migrates the template new tenants are cloned from."""

    def handle(self, *args: Any, **options: Any) -> None:
        database_require_extensions()
        super().handle(*args, **options)
        if self.sync_tenant and self.schema_name in (None, "", self.PUBLIC_SCHEMA_NAME):
            template_migrate(verbosity=int(options.get("verbosity", 1)))
