"""allauth forms that know about verified domains requiring SSO."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.forms import ResetPasswordForm

from apps.sso.selectors import sso_required_for


class SsoAwareResetPasswordForm(ResetPasswordForm):
    """Password reset, refused for an address whose verified domain requires SSO: its password
    can't be used to sign in, so a reset link would only mislead (the page points to SSO instead)."""

    def clean_email(self) -> str:
        email: str = super().clean_email()
        if sso_required_for(email=email) is not None:
            raise get_adapter().validation_error("sso_required")
        return email
