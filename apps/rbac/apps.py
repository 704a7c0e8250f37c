from django.apps import AppConfig


class RbacConfig(AppConfig):
    name = "apps.rbac"
    label = "rbac"
    default_auto_field = "django.db.models.BigAutoField"
