"""Roles owner, admin, developer, billing, viewer: today's `member` becomes `developer`."""

from django.db import migrations, models

ROLES = [("owner", "Owner"), ("admin", "Admin"), ("developer", "Developer"), ("billing", "Billing"), ("viewer", "Viewer")]


def member_to_developer(apps, schema_editor):
    Membership = apps.get_model("rbac", "Membership")
    Membership.objects.filter(role="member").update(role="developer")


def developer_to_member(apps, schema_editor):
    # `billing` did not exist before: the nearest older role that can't write anything is viewer.
    Membership = apps.get_model("rbac", "Membership")
    Membership.objects.filter(role="developer").update(role="member")
    Membership.objects.filter(role="billing").update(role="viewer")


class Migration(migrations.Migration):
    dependencies = [("rbac", "0001_initial")]

    operations = [
        migrations.RemoveConstraint(model_name="membership", name="rbac_membership_role_valid"),
        migrations.RunPython(member_to_developer, developer_to_member),
        migrations.AlterField(
            model_name="membership",
            name="role",
            field=models.CharField(choices=ROLES, default="developer", max_length=20),
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.CheckConstraint(
                condition=models.Q(("role__in", ["owner", "admin", "developer", "billing", "viewer"])),
                name="rbac_membership_role_valid",
            ),
        ),
    ]
