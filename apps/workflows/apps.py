from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "apps.workflows"
    label = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.work.registry import work_upkeep_register
        from apps.workflows.services import runs_content_sweep, runs_reap

        # Steps keep their own claim and reaper until they move onto apps.work; the beat's one
        # per-tenant fan-out runs them.
        work_upkeep_register(duty="reap", name="workflow_steps", run=runs_reap)
        work_upkeep_register(duty="sweep", name="workflow_runs", run=runs_content_sweep)
