"""Plans limit knowledge bases: the largest document an organization may upload
(`max_document_bytes`) and how many chunks it may store (`max_knowledge_chunks`); empty: the
platform's own bound (50 MB) or unlimited. Free, Pro and Enterprise versions get their values."""

from django.db import migrations, models

LIMITS = {
    "free": {"max_document_bytes": 5 * 1024 * 1024, "max_knowledge_chunks": 10_000},
    "pro": {"max_document_bytes": 25 * 1024 * 1024, "max_knowledge_chunks": 500_000},
    "enterprise": {"max_document_bytes": 50 * 1024 * 1024, "max_knowledge_chunks": None},
}


def seed(apps, schema_editor):
    PlanVersion = apps.get_model("billing", "PlanVersion")
    for code, values in LIMITS.items():
        PlanVersion.objects.filter(plan__code=code).update(**values)


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_operator_tools")]

    operations = [
        migrations.AddField(
            model_name="planversion",
            name="max_document_bytes",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Largest knowledge document upload, in bytes; empty: the platform's 50 MB.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="planversion",
            name="max_knowledge_chunks",
            field=models.PositiveIntegerField(
                blank=True, help_text="Knowledge chunks stored by the organization; empty: unlimited.", null=True
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
