from django.apps import AppConfig


class WorkConfig(AppConfig):
    """The durable-work runtime. No tables of its own: each kind's model inherits `WorkItem` and
    lives in its app; the kinds register themselves (apps.work.registry) in their AppConfig.ready."""

    name = "apps.work"
    label = "work"
    default_auto_field = "django.db.models.BigAutoField"
