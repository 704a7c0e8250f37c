from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "apps.knowledge"
    label = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # This app is ready before apps.api; the runtime (apps.work.progress) imports the API's errors,
        # which DRF must have loaded first (its settings import the API's authentication, which
        # imports those errors): load DRF's views before the runtime, as apps.api's ready does.
        from rest_framework import views  # noqa: F401

        from apps.knowledge.ingestion import DOCUMENT, EMBEDDING_SET
        from apps.work.registry import work_kind_register

        work_kind_register(DOCUMENT)
        work_kind_register(EMBEDDING_SET)
