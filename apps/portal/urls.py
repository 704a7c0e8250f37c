"""Portal URLs shared by the platform host and every organization's host."""

from django.urls import include, path

from apps.portal import views

urlpatterns = [
    path("accounts/signup/slug-check/", views.slug_check, name="portal-slug-check"),
    path("accounts/", include("allauth.urls")),
    path("enter/", views.enter, name="portal-enter"),
    path("enter/<slug:slug>/", views.enter_organization, name="portal-enter-organization"),
    path("keys/", views.keys, name="portal-keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="portal-key-revoke"),
    path("audit/", views.audit, name="portal-audit"),
]
