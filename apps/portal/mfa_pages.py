"""allauth's security-key removal, with the rule allauth applies only to authenticator apps.

allauth asks MFAAdapter.can_delete_authenticator before an authenticator app (TOTP) is
deactivated, but removes a security key or passkey without asking. The person's last second factor
in an organization that requires one would go, leaving them locked out of its portal until they
set one up again (and the organization's requirement unmet meanwhile): refused here the same way.
"""

from __future__ import annotations

from typing import Any

from allauth.mfa.adapter import get_adapter
from allauth.mfa.webauthn.views import RemoveWebAuthnView
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse


class GuardedRemoveWebAuthnView(RemoveWebAuthnView):
    """allauth's view (its reauthentication and confirmation kept); the POST asks the adapter first."""

    def form_valid(self, form: Any) -> HttpResponse:
        authenticator = self.get_object()
        adapter = get_adapter()
        if not adapter.can_delete_authenticator(authenticator):
            messages.error(self.request, adapter.error_messages["cannot_delete_authenticator"])
            return HttpResponseRedirect(reverse("mfa_list_webauthn"))
        removed: HttpResponse = super().form_valid(form)
        return removed


remove_webauthn = GuardedRemoveWebAuthnView.as_view()
