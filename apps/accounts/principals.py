"""Who is acting: a user, an API key, an operator or the platform itself.

Tenant tables record a principal by kind, id and label (never by a foreign key into the public
schema), so that deleting a user never blocks on tenant data and history still reads well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from apps.accounts.models import User

PrincipalKind = Literal["user", "api_key", "operator", "system"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    id: str | None
    label: str
    # What this principal may do in the organization it acts in (apps.rbac.permissions values):
    # an API key's scopes, a member's role. None: not resolved for a request (internal work, a
    # principal rebuilt from a stored row), which request-facing checks refuse.
    permissions: frozenset[str] | None = None

    @classmethod
    def system(cls, label: str = "system") -> Principal:
        return cls(kind="system", id=None, label=label)

    @classmethod
    def for_user(cls, user: User) -> Principal:
        return cls(kind="operator" if user.is_staff else "user", id=str(user.pk), label=user.email)
