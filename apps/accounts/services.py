import secrets

from allauth.account.models import EmailAddress
from django.db import transaction

from apps.accounts.models import User


@transaction.atomic
def user_ensure(*, email: str) -> User:
    """The user with this email, created without a usable password if new (they reset or use SSO)."""
    normalized = User.objects.normalize_email(email).lower()
    user = User.objects.filter(email__iexact=normalized).first()
    if user is None:
        user = User.objects.create_user(email=normalized)
    return user


@transaction.atomic
def operator_ensure(*, email: str) -> tuple[User, str | None]:
    """An operator (staff superuser). Returns the generated password only when it was just created."""
    normalized = User.objects.normalize_email(email).lower()
    existing = User.objects.filter(email__iexact=normalized).first()
    if existing is not None:
        if not (existing.is_staff and existing.is_superuser):
            existing.is_staff = existing.is_superuser = True
            existing.save(update_fields=["is_staff", "is_superuser"])
        email_verified_ensure(user=existing)
        return existing, None
    password = secrets.token_urlsafe(18)
    user = User.objects.create_superuser(email=normalized, password=password)
    email_verified_ensure(user=user)
    return user, password


@transaction.atomic
def email_verified_ensure(*, user: User) -> EmailAddress:
    """Mark the user's own address verified and primary: for accounts the platform created itself
    (the operator), which sign in through the portal where verification is mandatory."""
    address, _created = EmailAddress.objects.update_or_create(
        user=user, email__iexact=user.email, defaults={"email": user.email, "verified": True, "primary": True}
    )
    return address
