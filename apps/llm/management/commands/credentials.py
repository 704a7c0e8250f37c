from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.llm.services import provider_credentials_rotate
from apps.tenants.selectors import organization_list


class Command(BaseCommand):
    help = "Organizations' own provider keys: re-encrypt them under the current encryption key."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        actions.add_parser("rotate", help="Re-encrypt every stored provider key under the first configured key.")

    def handle(self, *args: Any, **options: Any) -> None:
        total = sum(provider_credentials_rotate(organization=org) for org in organization_list())
        self.stdout.write(f"Re-encrypted {total} provider key(s) under the current key.")
