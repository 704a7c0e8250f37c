from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "apps.ops"
    label = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery's metrics in every process: the publish stamp, task counts, the worker's exporter.
        from apps.ops import celery_metrics  # noqa: F401
