from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    """An organization's portal front page: who it is and where things are."""
    organization = request.tenant  # type: ignore[attr-defined]
    return render(request, "portal/home.html", {"organization": organization})


def platform_home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/platform_home.html", {"base_domain": settings.BASE_DOMAIN})
