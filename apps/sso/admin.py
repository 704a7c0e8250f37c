"""Operator tooling for SSO: verified domains (confirm without DNS; break-glass off-switch for a
domain's SSO requirement) and a read-only view of identity providers.

Every change goes through apps.sso.services, so it lands in the organization's audit log with the
operator's name; nothing here edits a row directly."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.accounts.models import User
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.services import SsoDomainRefused, sso_domain_confirm_by_operator, sso_domain_release_by_operator


def _operator(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


@admin.register(SsoDomain)
class SsoDomainAdmin(admin.ModelAdmin[SsoDomain]):
    list_display = ("domain", "organization", "verified_at", "verified_by", "require_sso", "created_at")
    list_filter = ("require_sso", ("verified_at", admin.EmptyFieldListFilter))
    list_select_related = ("organization",)
    search_fields = ("domain", "organization__slug")
    exclude = ("verification_token",)
    actions = ("confirm_domains", "stop_requiring_sso")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # organizations claim domains in their settings page

    def has_change_permission(self, request: HttpRequest, obj: SsoDomain | None = None) -> bool:
        return False  # read-only form; the actions below are the changes operators make

    def has_delete_permission(self, request: HttpRequest, obj: SsoDomain | None = None) -> bool:
        return False

    def has_confirm_permission(self, request: HttpRequest) -> bool:
        # Operators who may change domains in the admin's permission model (superusers always).
        return bool(request.user.has_perm("sso.change_ssodomain"))

    @admin.action(
        permissions=["confirm"], description="Confirm the selected domains as verified (operator confirmation, audited)"
    )
    def confirm_domains(self, request: HttpRequest, queryset: QuerySet[SsoDomain]) -> None:
        self._each(request, queryset, sso_domain_confirm_by_operator, "Confirmed as verified")

    @admin.action(
        permissions=["confirm"], description="Stop requiring SSO for the selected domains (break-glass, audited)"
    )
    def stop_requiring_sso(self, request: HttpRequest, queryset: QuerySet[SsoDomain]) -> None:
        self._each(request, queryset, sso_domain_release_by_operator, "No longer requiring SSO")

    def _each(self, request: HttpRequest, queryset: QuerySet[SsoDomain], service: object, done: str) -> None:
        operator = _operator(request)
        changed = []
        for row in queryset.select_related("organization"):
            try:
                service(domain_id=row.pk, operator=operator)  # type: ignore[operator]
            except SsoDomainRefused as refused:
                self.message_user(
                    request, f"Not changed: {row.domain} ({row.organization.slug}), {refused}.", messages.ERROR
                )
            else:
                changed.append(f"{row.domain} ({row.organization.slug})")
        if changed:
            self.message_user(request, f"{done}: {', '.join(changed)}.", messages.SUCCESS)


@admin.register(IdentityProvider)
class IdentityProviderAdmin(admin.ModelAdmin[IdentityProvider]):
    """Read-only: organizations configure their IdP in the portal (audited there)."""

    list_display = ("organization", "entity_id", "enabled", "allow_idp_initiated", "default_role", "updated_at")
    list_filter = ("enabled", "allow_idp_initiated")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "entity_id")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: IdentityProvider | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: IdentityProvider | None = None) -> bool:
        return False
