from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.ops import views
from apps.ops.metrics import metrics

_PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/health/live": views.live,
    "/health/ready": views.ready,
    "/metrics": metrics,  # its own bearer token (METRICS_TOKEN) guards it
}


class HealthCheckMiddleware:
    """Answers the health probes and the metrics scrape before host validation, tenancy and sessions.

    Load balancers, orchestrators and Prometheus reach a pod by IP address, which is no allowed
    host (Prometheus cannot set a Host header); a probe must neither need a tenant nor touch a session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = _PROBES.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
