import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.principals import Principal
from apps.llm.selectors import llm_settings_get
from apps.llm.services import SettingsInvalid, llm_settings_set
from apps.tenants.models import Organization


class Command(BaseCommand):
    help = "The LLM engine's per-organization settings: content retention, semantic cache."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        settings = actions.add_parser("settings", help="Show, or change, an organization's settings.")
        settings.add_argument("--tenant", required=True, help="The organization's slug")
        settings.add_argument(
            "--store-content",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="--no-store-content keeps only counts and costs: no prompt or answer is stored (no caches)",
        )
        settings.add_argument("--retention-days", type=int, default=None, help="Delete stored content after N days")
        settings.add_argument(
            "--semantic-cache",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Allow the semantic cache (L3); requests opt in with cache.semantic",
        )
        settings.add_argument(
            "--semantic-threshold", type=float, default=None, help="Cosine similarity for an L3 hit (0.8 to 1)"
        )
        settings.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.exclude(schema_name="public").filter(slug=options["tenant"]).first()
        if organization is None:
            raise CommandError(f"no organization {options['tenant']!r}", returncode=2)
        changes = {
            name: options[name]
            for name in ("store_content", "retention_days", "semantic_cache", "semantic_threshold")
            if options[name] is not None
        }
        if changes:
            try:
                llm_settings_set(organization=organization, actor=Principal.system("cli"), **changes)
            except SettingsInvalid as exc:
                raise CommandError(str(exc), returncode=2) from exc
        current = llm_settings_get(organization=organization)
        data = {
            "tenant": organization.slug,
            "store_content": current.store_content,
            "retention_days": current.retention_days,
            "semantic_cache": current.semantic_cache,
            "semantic_threshold": current.semantic_threshold,
        }
        if options["json"]:
            self.stdout.write(json.dumps(data))
        else:
            self.stdout.write("\n".join(f"{name}: {value}" for name, value in data.items()))
