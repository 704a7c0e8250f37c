"""Reads about people's accounts."""

from __future__ import annotations

from dataclasses import dataclass

from allauth.mfa.models import Authenticator

from apps.accounts.models import User

# The factors one signs in with; recovery codes only stand in for a lost one.
MFA_FACTOR_TYPES = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)


def user_has_mfa(*, user_id: int) -> bool:
    """Whether the person has a second factor (an authenticator app or a security key)."""
    return bool(Authenticator.objects.filter(user_id=user_id, type__in=MFA_FACTOR_TYPES).exists())


@dataclass(frozen=True)
class MfaSummary:
    members: int
    without_mfa: int


def organization_mfa_summary(*, organization_id: int) -> MfaSummary:
    """How many of an organization's members have no second factor yet (two counts, one query)."""
    members = User.objects.filter(memberships__organization_id=organization_id)
    with_factor = Authenticator.objects.filter(type__in=MFA_FACTOR_TYPES).values("user_id")
    total = members.count()
    return MfaSummary(members=total, without_mfa=members.exclude(pk__in=with_factor).count())
