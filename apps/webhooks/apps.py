from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.webhooks.services import webhook_deliveries_content_sweep, webhook_deliveries_dispatch
        from apps.work.registry import work_upkeep_register

        # Deliveries keep their own lease and retry schedule until they move onto apps.work; the
        # beat's one per-tenant fan-out sends the due ones and removes expired content.
        work_upkeep_register(duty="dispatch", name="webhook_deliveries", run=webhook_deliveries_dispatch)
        work_upkeep_register(duty="sweep", name="webhook_deliveries", run=webhook_deliveries_content_sweep)
