from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "apps.billing"
    label = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.billing import entitlements  # noqa: F401  (connects its cache to entitlements_changed)
        from apps.billing.services import receivers_connect

        receivers_connect()
