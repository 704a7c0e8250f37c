from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "apps.ops"
    label = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery's metrics in every process: the publish stamp, task counts, the worker's exporter;
        # cognitionos_anomalies_open{kind}, read from the open anomalies at scrape time.
        from apps.ops import anomaly_metrics, celery_metrics  # noqa: F401
