"""An invited person's sign-up ends with them in the inviting organization once their address is
verified (the sign-up through the invitation is remembered on it: apps.portal.forms.SignupForm)."""

from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed
from django.contrib import messages
from django.dispatch import receiver
from django.http import HttpRequest

from apps.accounts.models import User
from apps.rbac.models import Membership
from apps.rbac.services import invitation_accept_followed


@receiver(email_confirmed, dispatch_uid="portal.signup_invitation_accept")
def _accept_followed_invitation(
    sender: Any, request: HttpRequest | None, email_address: EmailAddress, **kwargs: Any
) -> None:
    # Whichever browser opens the verification link: the invitation the account signed up through
    # is accepted (audited "invitation.accepted", via email_verification). invitation_accept
    # checks the verified address is the invited one: confirming another address grants nothing.
    user = email_address.user
    if not isinstance(user, User):
        return
    results = invitation_accept_followed(user=user, email=email_address.email)
    if request is None or not hasattr(request, "session"):
        return
    for organization, outcome in results:
        if isinstance(outcome, Membership):
            messages.success(request, f"Welcome to {organization.name}.")
        elif outcome.code != "wrong_email":
            messages.error(request, f"{str(outcome).capitalize()}.")
