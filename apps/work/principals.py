"""Who a durable row acts for: a Principal stored as `principal_kind`, `principal_id` and
`principal_label` (WorkItem's fields; a workflow run has the same three) and read back.

A principal read back from a row has no permissions (None): it is the record of who asked, for the
worker's calls and the audit trail, not something request-facing checks accept.
"""

from __future__ import annotations

from typing import Protocol, cast

from apps.accounts.principals import Principal, PrincipalKind


class PrincipalRow(Protocol):
    principal_kind: str
    principal_id: str
    principal_label: str


def principal_fields(principal: Principal) -> dict[str, str]:
    """The row's fields for `principal` (no id is stored as "")."""
    return {"principal_kind": principal.kind, "principal_id": principal.id or "", "principal_label": principal.label}


def principal_from_fields(row: PrincipalRow) -> Principal:
    """The principal a row was written for (the inverse of principal_fields)."""
    kind = cast(PrincipalKind, row.principal_kind)  # the row was written from a Principal
    return Principal(kind=kind, id=row.principal_id or None, label=row.principal_label)
