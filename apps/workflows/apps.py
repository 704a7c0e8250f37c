from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "apps.workflows"
    label = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.work.registry import work_kind_register, work_upkeep_register
        from apps.workflows.executor import STEP
        from apps.workflows.runs import runs_admit, runs_content_sweep

        # Steps are durable work of the runtime: it claims, beats, retries, reaps and sends them.
        work_kind_register(STEP)
        # Runs are admitted per organization as runs end; at each reap too, for a run that waited
        # while another ended in a race.
        work_upkeep_register(
            duty="reap", name="workflow_runs", run=lambda *, organization: len(runs_admit(organization=organization))
        )
        # A step's content is its run's: the run's retention sweeps both.
        work_upkeep_register(duty="sweep", name="workflow_runs", run=runs_content_sweep)
