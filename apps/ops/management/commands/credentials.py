from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.llm.services import provider_credentials_rotate
from apps.tenants.selectors import organization_list
from apps.webhooks.services import webhook_secrets_reencrypt


class Command(BaseCommand):
    help = "Secrets stored encrypted (provider keys, webhook secrets): re-encrypt them under the current key."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        actions.add_parser("rotate", help="Re-encrypt every stored secret under the first configured key.")

    def handle(self, *args: Any, **options: Any) -> None:
        organizations = list(organization_list())
        keys = sum(provider_credentials_rotate(organization=org) for org in organizations)
        secrets = sum(webhook_secrets_reencrypt(organization=org) for org in organizations)
        self.stdout.write(
            f"Re-encrypted {keys} provider key(s) and {secrets} webhook endpoint secret(s) under the current key."
        )
