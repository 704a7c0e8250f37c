"""The permission matrix: the single source of what each role may do.

The portal, the REST API and the gateway check the same permissions; an API key's scopes are
permissions too (a key never holds more than the person who made it). docs/permissions.md is
generated from this module, and a test fails when the two differ.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """What can be done in an organization. The value is also the API-key scope's name."""

    LLM_INVOKE = "llm:invoke"
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    WORKFLOWS_READ = "workflows:read"
    WORKFLOWS_WRITE = "workflows:write"
    KNOWLEDGE_READ = "knowledge:read"
    KNOWLEDGE_WRITE = "knowledge:write"
    WEBHOOKS_MANAGE = "webhooks:manage"
    BUDGETS_READ = "budgets:read"
    BUDGETS_MANAGE = "budgets:manage"
    KEYS_MANAGE = "keys:manage"
    MEMBERS_READ = "members:read"
    MEMBERS_MANAGE = "members:manage"
    SECURITY_MANAGE = "security:manage"
    BILLING_MANAGE = "billing:manage"
    AUDIT_READ = "audit:read"
    ADMIN = "admin"  # every permission (an API key's `admin` scope; the Owner and Admin roles)


DESCRIPTIONS: dict[Permission, str] = {
    Permission.LLM_INVOKE: "Call models through /v1 (chat, embeddings, messages) and the playground",
    Permission.JOBS_READ: "See jobs, agents and their results",
    Permission.JOBS_WRITE: "Submit and cancel jobs; create, change and delete agents",
    Permission.WORKFLOWS_READ: "See workflows, runs and cost previews",
    Permission.WORKFLOWS_WRITE: "Create, change and delete workflows; start, cancel and re-run runs",
    Permission.KNOWLEDGE_READ: "Search knowledge bases and see their documents",
    Permission.KNOWLEDGE_WRITE: "Create knowledge bases; upload and delete documents",
    Permission.WEBHOOKS_MANAGE: "Create, change and delete webhook endpoints; see and retry deliveries",
    Permission.BUDGETS_READ: "See budgets, usage and spend",
    Permission.BUDGETS_MANAGE: "Set and delete budgets",
    Permission.KEYS_MANAGE: "Create and revoke API keys (never with more than one's own permissions)",
    Permission.MEMBERS_READ: "See members and invitations",
    Permission.MEMBERS_MANAGE: "Invite and remove members; change roles (never above one's own)",
    Permission.SECURITY_MANAGE: "Require MFA, configure SSO, verify domains",
    Permission.BILLING_MANAGE: "Change plan, payment method and billing details",
    Permission.AUDIT_READ: "Read and export the audit log",
    Permission.ADMIN: "Everything above",
}

EVERY = frozenset(Permission)
_DEVELOPER = frozenset(
    {
        Permission.LLM_INVOKE,
        Permission.JOBS_READ,
        Permission.JOBS_WRITE,
        Permission.WORKFLOWS_READ,
        Permission.WORKFLOWS_WRITE,
        Permission.KNOWLEDGE_READ,
        Permission.KNOWLEDGE_WRITE,
        Permission.WEBHOOKS_MANAGE,
        Permission.BUDGETS_READ,
        Permission.KEYS_MANAGE,
        Permission.MEMBERS_READ,
    }
)
_VIEWER = frozenset(
    {
        Permission.JOBS_READ,
        Permission.WORKFLOWS_READ,
        Permission.KNOWLEDGE_READ,
        Permission.BUDGETS_READ,
        Permission.MEMBERS_READ,
    }
)
_BILLING = _VIEWER | {Permission.BILLING_MANAGE, Permission.BUDGETS_MANAGE, Permission.AUDIT_READ}

# Built-in roles, by the value stored in rbac.Membership.role.
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "owner": EVERY,
    "admin": EVERY,
    "developer": _DEVELOPER,
    "billing": frozenset(_BILLING),
    "viewer": _VIEWER,
}


def permissions_expand(granted: frozenset[Permission] | set[Permission]) -> frozenset[Permission]:
    """`admin` stands for every permission."""
    return EVERY if Permission.ADMIN in granted else frozenset(granted)


def role_permissions(role: str) -> frozenset[Permission]:
    """A built-in role's permissions (none for an unknown role: refuse rather than guess)."""
    return ROLE_PERMISSIONS.get(role, frozenset())
