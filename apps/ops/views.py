from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from apps.ops import health


@never_cache
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
def ready(request: HttpRequest) -> JsonResponse:
    failures = {name: error for name, check in health.CHECKS.items() if (error := check()) is not None}
    if failures:
        return JsonResponse({"status": "unavailable", "failing": failures}, status=503)
    return JsonResponse({"status": "ok", "checks": dict.fromkeys(health.CHECKS, "ok")})
