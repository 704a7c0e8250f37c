"""An invited person's sign-up ends with them in the inviting organization once their address is
verified (the sign-up through the invitation is remembered on it: apps.portal.forms.SignupForm).
And sign-out everywhere: each session keeps when it was signed in, a sign-out records when it was
(apps.portal.middleware.SignedOutMiddleware ends the older sessions)."""

from __future__ import annotations

import time
from typing import Any

from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed
from django.contrib import messages
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from apps.accounts.models import User
from apps.portal.middleware import SIGNED_IN_AT_SESSION_KEY, signed_out_record
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


@receiver(user_logged_in, dispatch_uid="portal.session_signed_in_at")
def _session_signed_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SIGNED_IN_AT_SESSION_KEY] = time.time()


@receiver(user_logged_out, dispatch_uid="portal.signed_out_everywhere")
def _signed_out_everywhere(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        signed_out_record(user_id=int(user.pk), at=time.time())
