import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from apps.accounts.principals import Principal
from apps.llm.services import BudgetInvalid, budget_set
from apps.tenants.models import Organization


class Command(BaseCommand):
    help = "Set budgets: per organization, user or API key; per UTC day or month."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        setter = actions.add_parser("set", help="Create or change a budget.")
        setter.add_argument("--tenant", required=True, help="The organization's slug")
        setter.add_argument("--scope", required=True, choices=["organization", "user", "key"])
        setter.add_argument("--id", default="", help="The user's or the API key's id (scopes user and key)")
        setter.add_argument("--period", required=True, choices=["day", "month"])
        setter.add_argument("--limit-usd", required=True)
        setter.add_argument("--soft-percent", type=int, default=None)
        setter.add_argument("--hard", action="store_true", help="Refuse calls that could exceed the limit")
        setter.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.exclude(schema_name="public").filter(slug=options["tenant"]).first()
        if organization is None:
            raise CommandError(f"no organization {options['tenant']!r}", returncode=2)
        try:
            limit = Decimal(options["limit_usd"])
        except InvalidOperation as exc:
            raise CommandError(f"--limit-usd must be an amount, not {options['limit_usd']!r}", returncode=2) from exc
        with tenant_context(organization):
            try:
                budget = budget_set(
                    organization=organization,
                    scope=options["scope"],
                    scope_id=options["id"],
                    period=options["period"],
                    limit_usd=limit,
                    soft_percent=options["soft_percent"],
                    hard=options["hard"],
                    actor=Principal.system("cli"),
                )
            except BudgetInvalid as exc:
                raise CommandError(str(exc), returncode=2) from exc
        data = {
            "id": budget.pk,
            "scope": budget.scope,
            "scope_id": budget.scope_id,
            "period": budget.period,
            "limit_usd": str(budget.limit_usd),
            "soft_percent": budget.soft_percent,
            "hard": budget.hard,
        }
        self.stdout.write(json.dumps(data) if options["json"] else f"Budget set: {data}")
