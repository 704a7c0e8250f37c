from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.webhooks.services import DELIVERY
        from apps.work.registry import work_kind_register

        # Deliveries are durable work: the runtime runs, retries (on their schedule), reaps and
        # sweeps them, through the one per-tenant fan-out.
        work_kind_register(DELIVERY)
