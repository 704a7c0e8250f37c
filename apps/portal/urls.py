"""Portal URLs shared by the platform host and every organization's host."""

from django.urls import include, path

from apps.portal import members_pages, mfa_pages, security, sso_pages, views

urlpatterns = [
    path("accounts/signup/slug-check/", views.slug_check, name="portal-slug-check"),
    path("accounts/sso/", sso_pages.sso_signin, name="portal-sso-signin"),
    # Before allauth's own route of the same name: a security key is removed under the same rule as
    # an authenticator app (apps.portal.mfa_pages).
    path("accounts/2fa/webauthn/keys/<int:pk>/remove/", mfa_pages.remove_webauthn, name="mfa_remove_webauthn"),
    path("accounts/", include("allauth.urls")),
    path("enter/", views.enter, name="portal-enter"),
    path("enter/<slug:slug>/", views.enter_organization, name="portal-enter-organization"),
    path("settings/security/", security.security, name="portal-security"),
    path("settings/sso/", sso_pages.sso_settings, name="portal-sso"),
    path("settings/sso/identity-provider/delete/", sso_pages.sso_idp_delete, name="portal-sso-idp-delete"),
    path("settings/sso/domains/", sso_pages.sso_domain_add_page, name="portal-sso-domain-add"),
    path(
        "settings/sso/domains/<int:domain_id>/verify/",
        sso_pages.sso_domain_verify_page,
        name="portal-sso-domain-verify",
    ),
    path(
        "settings/sso/domains/<int:domain_id>/remove/",
        sso_pages.sso_domain_remove_page,
        name="portal-sso-domain-remove",
    ),
    path(
        "settings/sso/domains/<int:domain_id>/require/",
        sso_pages.sso_domain_require_page,
        name="portal-sso-domain-require",
    ),
    path("members/", members_pages.members, name="portal-members"),
    path("members/<int:membership_id>/role/", members_pages.member_role, name="portal-member-role"),
    path("members/<int:membership_id>/remove/", members_pages.member_remove, name="portal-member-remove"),
    path(
        "members/invitations/<int:invitation_id>/revoke/",
        members_pages.invitation_revoke_page,
        name="portal-invitation-revoke",
    ),
    path(
        "members/invitations/<int:invitation_id>/resend/",
        members_pages.invitation_resend_page,
        name="portal-invitation-resend",
    ),
    path("members/leave/", members_pages.member_leave, name="portal-member-leave"),
    path("invitations/<str:token>/", members_pages.invitation_accept_page, name="portal-invitation-accept"),
    path("keys/", views.keys, name="portal-keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="portal-key-revoke"),
    path("audit/", views.audit, name="portal-audit"),
    # Each area of the portal keeps its routes beside its views (apps/portal/<area>_pages.py).
    path("", include("apps.portal.dashboard_pages")),
    path("", include("apps.portal.data_export_pages")),
    path("", include("apps.portal.requests_pages")),
    path("", include("apps.portal.playground_pages")),
    path("", include("apps.portal.jobs_pages")),
    path("", include("apps.portal.agents_pages")),
    path("", include("apps.portal.workflows_pages")),
    path("", include("apps.portal.knowledge_pages")),
    path("", include("apps.portal.webhooks_pages")),
    path("", include("apps.portal.budgets_pages")),
    path("", include("apps.portal.provider_keys_pages")),
    path("", include("apps.portal.model_settings_pages")),
    path("", include("apps.portal.billing_pages")),
]
