from django.apps import AppConfig


class LlmPlatformConfig(AppConfig):
    """The LLM engine's public-schema half: the model catalog, prices and usage rollups."""

    name = "apps.llm.platform"
    label = "llm_platform"
    default_auto_field = "django.db.models.BigAutoField"
