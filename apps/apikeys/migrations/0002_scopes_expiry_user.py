import django.contrib.postgres.fields
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("apikeys", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Keys made before scopes existed could do everything: they keep `admin`, so nothing breaks.
        migrations.AddField(
            model_name="apikey",
            name="scopes",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=32),
                default=["admin"],
                help_text="Permissions the key grants (apps.rbac).",
                size=None,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="apikey",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="apikey",
            name="user",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="api_keys",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("scopes__len__gt", 0),
                    (
                        "scopes__contained_by",
                        [
                            "admin",
                            "audit:read",
                            "billing:manage",
                            "budgets:manage",
                            "budgets:read",
                            "jobs:read",
                            "jobs:write",
                            "keys:manage",
                            "knowledge:read",
                            "knowledge:write",
                            "llm:invoke",
                            "members:manage",
                            "members:read",
                            "security:manage",
                            "webhooks:manage",
                            "workflows:read",
                            "workflows:write",
                        ],
                    ),
                ),
                name="apikeys_apikey_scopes_known",
            ),
        ),
    ]
