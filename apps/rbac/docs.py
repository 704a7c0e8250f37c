"""docs/permissions.md, written from the permission matrix (apps.rbac.permissions): the document
and the code can't disagree, because a test regenerates one from the other."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from apps.rbac.models import Role
from apps.rbac.permissions import DESCRIPTIONS, Permission, permissions_expand, role_permissions
from apps.rbac.selectors import CUSTOM_ROLE_FALLBACK


def permissions_doc_path() -> Path:
    return Path(settings.BASE_DIR) / "docs" / "permissions.md"


def permissions_doc_render() -> str:
    roles = list(Role)
    lines = [
        "# Permissions",
        "",
        "<!-- Generated from apps/rbac/permissions.py by `manage.py permissions_doc`: edit the matrix,",
        "     not this file (`manage.py permissions_doc --check` and the test suite fail when they differ). -->",
        "",
        "Everything a person or a program may do in an organization is one of the permissions below.",
        "A member holds the permissions of their role; an API key holds its scopes, which are the same",
        "names (a key is never given more than the person who creates it holds). The portal, the REST API",
        "and the OpenAI-compatible gateway check the same permissions: every REST endpoint declares the",
        "permission each of its methods needs, and a request without it is refused with 403",
        "`permission_denied`.",
        "",
        "## Built-in roles",
        "",
        "| Permission | What it allows | " + " | ".join(role.label for role in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for permission in Permission:
        if permission is Permission.ADMIN:
            continue
        marks = ["yes" if permission in permissions_expand(role_permissions(role.value)) else "—" for role in roles]
        lines.append(f"| `{permission.value}` | {DESCRIPTIONS[permission]} | " + " | ".join(marks) + " |")
    holders = [role.label for role in roles if Permission.ADMIN in role_permissions(role.value)]
    lines += [
        "",
        f"`{Permission.ADMIN.value}` stands for every permission: "
        + " and ".join([", ".join(holders[:-1]), holders[-1]] if len(holders) > 1 else holders)
        + " hold it, and so does an API key with the `admin` scope.",
        "",
        "## Rules",
        "",
        "- An organization always keeps an owner: the last owner can be neither demoted nor removed.",
        "- Nobody grants a role or a permission above their own: a role change, a custom role and an API",
        "  key's scopes are limited to what the person (or key) making them holds, and only an owner",
        "  makes, demotes or removes owners.",
        f"- Changing roles and removing members needs `{Permission.MEMBERS_MANAGE.value}`; anyone may leave.",
        "- A role change takes effect on the member's next request in the process that made it, and",
        "  within `MEMBERSHIP_CACHE_SECONDS` (5 s by default) everywhere else.",
        "",
        "## Custom roles",
        "",
        "On plans whose limits include `custom_roles` (Enterprise), an organization may define its own",
        "roles: a name (unique in the organization) and any set of the permissions above. A member holds",
        "either a built-in role or one custom role. Changing a custom role's permissions changes what",
        "its members may do; a custom role still held by members can't be deleted.",
        "If the plan stops including custom roles (a downgrade), members holding one act as",
        f"{CUSTOM_ROLE_FALLBACK.label} until the plan includes them again or they are given a built-in role; the",
        "Members page says so.",
        "",
        "## Members and roles over the REST API",
        "",
        f"- `GET /api/v1/members` and `GET /api/v1/members/{{id}}` (`{Permission.MEMBERS_READ.value}`): each member's",
        "  role, custom role and resulting permissions.",
        '- `PATCH /api/v1/members/{id}` with `{"role": "viewer"}` or `{"custom_role": 7}`, and',
        f"  `DELETE /api/v1/members/{{id}}` (`{Permission.MEMBERS_MANAGE.value}`). A refused change answers 403",
        "  `above_your_role`, 409 `last_owner`, or 404 for a member of another organization.",
        f"- `GET /api/v1/roles` (`{Permission.MEMBERS_READ.value}`): the built-in roles with their permissions,",
        "  the custom roles, and every permission described. `POST /api/v1/roles`, `PATCH` and `DELETE",
        f"  /api/v1/roles/{{id}}` (`{Permission.MEMBERS_MANAGE.value}`) manage custom roles: 403 `plan_limit` on",
        "  plans without them, 409 `duplicate_name` or `role_in_use`, 400 `unknown_permission`.",
        "- Keys bound to a member are revoked when the member leaves or loses one of the key's scopes.",
        "",
        "## Invitations",
        "",
        f"- `GET /api/v1/invitations` (`{Permission.MEMBERS_READ.value}`): every invitation, newest first, with",
        "  its state (`open`, `accepted`, `revoked`, `expired`).",
        f'- `POST /api/v1/invitations` with `{{"email": ..., "role": "viewer"}}` or `{{"custom_role": 7}}`'
        f" (`{Permission.MEMBERS_MANAGE.value}`):",
        "  emails a link on the organization's host that works once, for 7 days. Refused with 403",
        "  `above_your_role` (a role above the inviter's), 403 `plan_limit_members` (members plus open",
        "  invitations would pass the plan's `max_members`), 409 `already_member` or `invitation_exists`.",
        f"- `POST /api/v1/invitations/{{id}}/revoke` (`{Permission.MEMBERS_MANAGE.value}`).",
        f"- `POST /api/v1/invitations/{{id}}/resend` (`{Permission.MEMBERS_MANAGE.value}`): mails an open or expired",
        "  invitation again with a new link (the old one stops working) and a new 7-day expiry; 429",
        "  `rate_limited` within a minute of the last sending, 409 for an accepted or revoked invitation.",
        "- Accepting: the invited person signs in (or signs up and verifies the address) on the",
        "  organization's host and opens the link; only an account whose verified email is the invited",
        "  address can accept. Someone who signed up through the link joins when the address is verified,",
        "  in whichever browser. The portal's Members page (`/members/`) does the same as the API.",
        "- Leaving: any member may leave from the Members page (never the last owner), audited",
        "  `membership.left`.",
        "",
        "## API key scopes",
        "",
        "A key's scopes are permission names: " + ", ".join(f"`{permission.value}`" for permission in Permission) + ".",
        "",
    ]
    return "\n".join(lines)
