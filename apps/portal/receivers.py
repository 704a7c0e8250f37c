"""An invited person's sign-up ends with them in the inviting organization once their address is
verified (the invitation is followed in apps.portal.forms.SignupForm)."""

from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed
from django.contrib import messages
from django.dispatch import receiver
from django.http import HttpRequest

from apps.accounts.models import User
from apps.portal.forms import SIGNUP_INVITATION_SESSION_KEY
from apps.rbac.services import MembershipChangeRefused, invitation_accept
from apps.tenants.models import Organization


@receiver(email_confirmed, dispatch_uid="portal.signup_invitation_accept")
def _accept_followed_invitation(
    sender: Any, request: HttpRequest | None, email_address: EmailAddress, **kwargs: Any
) -> None:
    # Only the session that signed up through the invitation remembers it: a verification link
    # opened elsewhere verifies the address, and the invitation link then accepts in one click.
    if request is None or not hasattr(request, "session"):
        return
    pending = request.session.get(SIGNUP_INVITATION_SESSION_KEY)
    if not isinstance(pending, dict):
        return
    user = email_address.user
    if not isinstance(user, User):
        return
    organization = Organization.objects.filter(pk=int(pending.get("organization_id") or 0)).first()
    if organization is None:
        request.session.pop(SIGNUP_INVITATION_SESSION_KEY, None)
        return
    try:
        # invitation_accept checks that the verified address is the invited one: confirming
        # another address of the same account grants nothing, and the invitation stays pending.
        invitation_accept(organization=organization, token=str(pending.get("token", "")), user=user)
    except MembershipChangeRefused as refused:
        if refused.code == "wrong_email":
            return
        request.session.pop(SIGNUP_INVITATION_SESSION_KEY, None)
        messages.error(request, f"{str(refused).capitalize()}.")
        return
    request.session.pop(SIGNUP_INVITATION_SESSION_KEY, None)
    messages.success(request, f"Welcome to {organization.name}.")
