"""Django's messages through MessagesOnUseMiddleware: made when a page uses them, never for an API call."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.contrib import messages
from django.contrib.messages.storage import default_storage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from apps.portal import middleware


def _through(view: Any, cookies: dict[str, str] | None = None) -> tuple[HttpRequest, HttpResponse]:
    request = RequestFactory().get("/")
    request.COOKIES.update(cookies or {})
    handler = SessionMiddleware(cast(Any, middleware.MessagesOnUseMiddleware(view)))
    return request, cast(HttpResponse, handler(request))


@pytest.fixture
def storages_made(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    made: list[object] = []
    real = default_storage

    def counting(request: HttpRequest) -> Any:
        made.append(request)
        return real(request)

    monkeypatch.setattr(middleware, "default_storage", counting)
    return made


def test_a_request_that_never_uses_messages_makes_no_storage_and_sets_no_cookie(storages_made: list[object]) -> None:
    _, response = _through(lambda request: HttpResponse("ok"))
    assert storages_made == []
    assert "messages" not in response.cookies


def test_a_message_added_on_one_page_is_shown_on_the_next(storages_made: list[object]) -> None:
    def adding(request: HttpRequest) -> HttpResponse:
        messages.success(request, "Key created.")
        return HttpResponse("added")

    shown: list[str] = []

    def showing(request: HttpRequest) -> HttpResponse:
        shown.extend(str(message) for message in messages.get_messages(request))
        return HttpResponse("shown")

    request, response = _through(adding)
    assert isinstance(request._messages._wrapped, FallbackStorage)  # type: ignore[attr-defined]
    cookie = response.cookies["messages"].value
    _, response = _through(showing, cookies={"messages": cookie})
    assert shown == ["Key created."]
    assert len(storages_made) == 2
    # Shown once: the next response clears the cookie.
    assert response.cookies["messages"].value == ""
