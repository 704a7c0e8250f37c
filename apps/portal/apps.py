from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "apps.portal"
    label = "portal"

    def ready(self) -> None:
        from apps.portal import receivers  # noqa: F401  (connects the signal receivers)
