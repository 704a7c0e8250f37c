from typing import Any

from django.core.management.base import BaseCommand

class MigrateSchemasCommand(BaseCommand):
    sync_tenant: bool
    sync_public: bool
    schema_name: str | None
    PUBLIC_SCHEMA_NAME: str
    def handle(self, *args: Any, **options: Any) -> None: ...
