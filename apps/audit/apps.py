from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The runtime (apps.work.progress) imports the API's errors, which DRF must have loaded first
        # (as apps.knowledge's ready explains): DRF's views before the export's kind of work.
        from rest_framework import views  # noqa: F401

        from apps.audit.exports import EXPORT, data_exports_sweep
        from apps.work.registry import work_kind_register, work_upkeep_register

        work_kind_register(EXPORT)
        work_upkeep_register(duty="sweep", name="data_exports", run=data_exports_sweep)
