"""Tasks the integration tests send to a real worker (loaded with `celery worker --include`)."""

from apps.knowledge.models import Document
from apps.tenants.connection import tenant_connection
from apps.tenants.tasks import tenant_task


@tenant_task(ignore_result=False)
def document_titles() -> dict[str, object]:
    return {
        "schema": tenant_connection().schema_name,
        "titles": sorted(Document.objects.values_list("title", flat=True)),
    }
