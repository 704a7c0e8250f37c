"""SAML SSO routes, ahead of allauth's own (same paths: reverse("saml_acs") etc. still name them)."""

from django.urls import path

from apps.sso import views

urlpatterns = [
    path("accounts/saml/<str:organization_slug>/login/", views.login, name="sso-saml-login"),
    path("accounts/saml/<str:organization_slug>/acs/", views.acs, name="sso-saml-acs"),
    path("accounts/saml/<str:organization_slug>/acs/finish/", views.acs_finish, name="sso-saml-acs-finish"),
    path("accounts/saml/<str:organization_slug>/metadata/", views.metadata, name="sso-saml-metadata"),
    path("accounts/saml/<str:organization_slug>/sls/", views.sls, name="sso-saml-sls"),
]
