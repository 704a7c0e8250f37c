from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "apps.llm"
    label = "llm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The platform's hard budget of plans without overage follows the plan (apps.llm.plan_budget).
        from apps.llm.plan_budget import receivers_connect

        receivers_connect()
