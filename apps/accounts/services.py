import secrets

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
        return existing, None
    password = secrets.token_urlsafe(18)
    user = User.objects.create_superuser(email=normalized, password=password)
    return user, password
