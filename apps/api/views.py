from django.http import HttpRequest, JsonResponse

from apps.api.errors import error_body


def api_not_found(request: HttpRequest, unknown: str) -> JsonResponse:
    """Unknown API paths answer in the API's error shape, not with an HTML page."""
    return JsonResponse(
        error_body(status_code=404, code="unknown_endpoint", message=f"no endpoint at {request.path}"), status=404
    )
