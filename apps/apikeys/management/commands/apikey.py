import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.apikeys.keys import expiry_parse
from apps.apikeys.services import ApiKeyInvalid, ApiKeyRefused, apikey_create
from apps.rbac.permissions import Permission
from apps.tenants.models import Organization


class Command(BaseCommand):
    help = "Create API keys (the key is printed once; only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        create = actions.add_parser("create", help="Create an API key for an organization.")
        create.add_argument("--tenant", required=True, help="The organization's slug")
        create.add_argument("--name", default="CLI key")
        create.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            metavar="SCOPE",
            choices=sorted(permission.value for permission in Permission),
            help="A permission the key grants (repeat for more; default: admin, every permission)",
        )
        create.add_argument("--expires", help="When the key stops working: a duration (30d, 12h, 90m) or an ISO date")
        create.add_argument("--user", metavar="EMAIL", help="Bind the key to this member (revoked when they leave)")
        create.add_argument("--json", action="store_true", help="Print a JSON object with the key under `key`")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.exclude(schema_name="public").filter(slug=options["tenant"]).first()
        if organization is None:
            raise CommandError(f"no organization {options['tenant']!r}", returncode=2)
        try:
            expires_at = expiry_parse(options["expires"]) if options["expires"] else None
        except ValueError as exc:
            raise CommandError(f"--expires: {exc}", returncode=2) from exc
        user = None
        if options["user"]:
            user = User.objects.filter(email__iexact=options["user"].strip()).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}", returncode=2)
        try:
            # The CLI acts for the platform's operator: it may grant any scope.
            issued = apikey_create(
                organization=organization,
                name=options["name"],
                actor=Principal.system("cli"),
                scopes=options["scopes"] or [Permission.ADMIN.value],
                expires_at=expires_at,
                user=user,
            )
        except (ApiKeyInvalid, ApiKeyRefused) as exc:
            raise CommandError(str(exc), returncode=2) from exc
        api_key = issued.api_key
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "key": issued.key,
                        "id": api_key.pk,
                        "name": api_key.name,
                        "organization": organization.slug,
                        "scopes": api_key.scopes,
                        "expires_at": api_key.expires_at.isoformat() if api_key.expires_at else None,
                        "user": user.email if user is not None else None,
                    }
                )
            )
        else:
            self.stdout.write(f"{issued.key}\n(shown once: store it now; only its hash is kept)")
