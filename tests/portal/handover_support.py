"""The handover as a browser makes it: the source host's page holds a form that posts the token to
the target host's /handover/ (apps.portal.handover)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.test import Client, RequestFactory

from apps.accounts.models import User
from apps.portal.handover import handover_prepare
from apps.tenants.models import Organization

ORIGIN = "http://localhost"  # a page of the platform host


@dataclass(frozen=True)
class PostedForm:
    host: str
    path: str
    token: str


def handover_form(response: Any) -> PostedForm:
    """The handover form in a source page (200, never a redirect: the token is in no URL)."""
    assert response.status_code == 200, response.status_code
    page = response.content.decode()
    action = re.search(r'<form id="handover" method="post" action="([^"]+)"', page)
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)"', page)
    assert action and token, page
    parts = urlsplit(html.unescape(action.group(1)))
    return PostedForm(host=parts.netloc, path=parts.path, token=html.unescape(token.group(1)))


def handover_post(client: Client, token: str, origin: str = ORIGIN) -> Any:
    return client.post("/handover/", {"token": token}, HTTP_ORIGIN=origin)


def token_for(user: User, organization: Organization, next_path: str = "/") -> str:
    request = RequestFactory().get("/", HTTP_HOST="localhost")
    return handover_prepare(request=request, user=user, organization=organization, next_path=next_path).token
