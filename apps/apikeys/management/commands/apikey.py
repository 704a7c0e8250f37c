import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.tenants.models import Organization


class Command(BaseCommand):
    help = "Create API keys (the key is printed once; only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        create = actions.add_parser("create", help="Create an API key for an organization.")
        create.add_argument("--tenant", required=True, help="The organization's slug")
        create.add_argument("--name", default="CLI key")
        create.add_argument("--json", action="store_true", help="Print a JSON object with the key under `key`")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.exclude(schema_name="public").filter(slug=options["tenant"]).first()
        if organization is None:
            raise CommandError(f"no organization {options['tenant']!r}", returncode=2)
        issued = apikey_create(organization=organization, name=options["name"], actor=Principal.system("cli"))
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "key": issued.key,
                        "id": issued.api_key.pk,
                        "name": issued.api_key.name,
                        "organization": organization.slug,
                    }
                )
            )
        else:
            self.stdout.write(f"{issued.key}\n(shown once: store it now; only its hash is kept)")
