"""Sign-ins and second factors in the organizations' audit logs (allauth's and Django's signals).

Where an event goes:
- A sign-in, a failed sign-in and a wrong second-factor code are recorded in the log of the
  organization whose host they happened on. On the platform host there is no organization: a
  sign-in there is followed by a handover into an organization, which is itself a sign-in on that
  organization's host and recorded there; a failed attempt there names no organization at all (and
  listing the memberships of whatever address someone typed would leak who belongs where).
- Adding, removing or regenerating a second factor is recorded in the log of every organization
  the person belongs to: it changes how each of them is protected, whichever host it was done on,
  and an organization that requires MFA needs to see a member drop it.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.account.internal.flows.login import record_authentication
from allauth.mfa import signals as mfa_signals
from allauth.mfa.models import Authenticator
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.tenants.models import Organization

_ANONYMOUS = Principal.system("anonymous")


def _host_organization(request: HttpRequest | None) -> Organization | None:
    tenant = getattr(request, "tenant", None) if request is not None else None
    if not isinstance(tenant, Organization) or tenant.is_public:
        return None
    return tenant


def _client(request: HttpRequest) -> dict[str, str]:
    # allauth's reading of the client address (ALLAUTH_TRUSTED_PROXY_COUNT, as the rate limits).
    return {"ip": get_account_adapter().get_client_ip(request) or "", "host": request.get_host()}


@receiver(user_logged_in, dispatch_uid="accounts.audit_signed_in")
def _signed_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    organization = _host_organization(request)
    if organization is None or request is None:
        return
    via = "handover" if request.path_info.startswith("/handover/") else "sign_in"
    audit_record(
        organization=organization,
        actor=Principal.for_user(user),
        action="account.signed_in",
        target=user,
        metadata={"via": via, **_client(request)},
    )


@receiver(user_login_failed, dispatch_uid="accounts.audit_sign_in_failed")
def _sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    organization = _host_organization(request)
    if organization is None or request is None:
        return
    login = str(credentials.get("email") or credentials.get("username") or "")[:254]
    audit_record(
        organization=organization,
        actor=_ANONYMOUS,
        action="account.sign_in_failed",
        metadata={"login": login, **_client(request)},
    )


@receiver(mfa_signals.authentication_failed, dispatch_uid="accounts.audit_mfa_failed")
def _mfa_code_refused(
    sender: Any, request: HttpRequest | None, user: User, authenticator: Authenticator, **kwargs: Any
) -> None:
    organization = _host_organization(request)
    if organization is None or request is None:
        return
    audit_record(
        organization=organization,
        actor=Principal.for_user(user),
        action="account.mfa_failed",
        target=user,
        metadata={"type": authenticator.type, **_client(request)},
    )


def _record_for_memberships(*, user: User, action: str, authenticator: Authenticator) -> None:
    # Through the membership relation (the rbac app sits above accounts: no import of it here).
    for organization in Organization.objects.filter(memberships__user_id=user.pk).exclude(schema_name="public"):
        audit_record(
            organization=organization,
            actor=Principal.for_user(user),
            action=action,
            target=user,
            metadata={"type": authenticator.type},
        )


@receiver(mfa_signals.authenticator_added, dispatch_uid="accounts.audit_mfa_added")
def _mfa_added(
    sender: Any, request: HttpRequest | None, user: User, authenticator: Authenticator, **kwargs: Any
) -> None:
    _record_for_memberships(user=user, action="account.mfa_activated", authenticator=authenticator)
    if request is not None and authenticator.type in (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN):
        # Setting it up proved the factor just now: this session counts as signed in with it, so an
        # organization requiring MFA doesn't ask for a code a second time right away.
        record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type, enrolled=True)


@receiver(mfa_signals.authenticator_removed, dispatch_uid="accounts.audit_mfa_removed")
def _mfa_removed(
    sender: Any, request: HttpRequest | None, user: User, authenticator: Authenticator, **kwargs: Any
) -> None:
    _record_for_memberships(user=user, action="account.mfa_deactivated", authenticator=authenticator)


@receiver(mfa_signals.authenticator_reset, dispatch_uid="accounts.audit_mfa_reset")
def _mfa_reset(
    sender: Any, request: HttpRequest | None, user: User, authenticator: Authenticator, **kwargs: Any
) -> None:
    _record_for_memberships(user=user, action="account.recovery_codes_regenerated", authenticator=authenticator)
