from typing import Any, ClassVar

from django.db import models

class TenantMixin(models.Model):
    auto_drop_schema: ClassVar[bool]
    auto_create_schema: ClassVar[bool]
    schema_name: models.CharField[str, str]
    def __enter__(self) -> None: ...
    def __exit__(self, *exc: object) -> None: ...
    def get_primary_domain(self) -> Any: ...

class DomainMixin(models.Model):
    domain: models.CharField[str, str]
    tenant: Any
    is_primary: models.BooleanField[bool, bool]
