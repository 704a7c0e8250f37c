import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.billing.metering import metering_target, meters_push, meters_reconcile
from apps.tenants.models import Organization


def _organization(slug: str) -> Organization:
    organization = Organization.objects.exclude(schema_name="public").filter(slug=slug).first()
    if organization is None:
        raise CommandError(f"no organization {slug!r}", returncode=2)
    return organization


class Command(BaseCommand):
    help = "Billing: usage metering to Stripe (push now, reconcile a month)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        reconcile = actions.add_parser(
            "reconcile",
            help="Compare a month's billable usage in the ledger, what was sent to Stripe and what Stripe counts.",
        )
        reconcile.add_argument("--tenant", required=True, help="The organization's slug")
        reconcile.add_argument("--period", required=True, help="The month, YYYY-MM (UTC)")
        reconcile.add_argument("--json", action="store_true", help="Print one JSON object")
        push = actions.add_parser("meter-push", help="Send the organization's unsent usage to Stripe now.")
        push.add_argument("--tenant", required=True, help="The organization's slug")
        push.add_argument("--batch", type=int, default=1000, help="Rows per batch (1-10000)")
        push.add_argument("--max-rows", type=int, default=1_000_000, help="Stop after this many rows")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = _organization(options["tenant"])
        if options["action"] == "meter-push":
            self._push(organization, batch=options["batch"], max_rows=options["max_rows"])
            return
        try:
            result = meters_reconcile(organization=organization, period=options["period"])
        except ValueError as exc:
            raise CommandError(f"--period: {exc}", returncode=2) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        usd = 1e8
        self.stdout.write(
            "\n".join(
                [
                    f"organization {result.organization}, {result.period} (UTC), Stripe customer "
                    f"{result.customer or '(none)'}; unit: micro-cent (1e-8 USD)",
                    f"ledger (billable):  {result.ledger_units:>16} "
                    f"({result.ledger_rows} rows, ${result.ledger_units / usd:.8f})",
                    f"sent to Stripe:     {result.sent_units:>16} ({result.sent_rows} rows)",
                    f"Stripe counts:      {result.stripe_units:>16}",
                    f"not yet sent:       {result.unsent_units:>16}",
                    f"Stripe minus sent:  {result.stripe_difference:>16}",
                    f"difference:         {result.difference:>16} (Stripe minus ledger)",
                ]
            )
        )

    def _push(self, organization: Organization, *, batch: int, max_rows: int) -> None:
        if not 1 <= batch <= 10_000:
            raise CommandError("--batch must be 1-10000", returncode=2)
        if metering_target(organization=organization) is None:
            raise CommandError(f"{organization.slug} has no Stripe customer on a plan that bills usage", returncode=2)
        report = meters_push(organization=organization, batch=batch, max_rows=max_rows, ignore_backoff=True)
        self.stdout.write(
            json.dumps(
                {
                    "sent": report.sent,
                    "marked": report.marked,
                    "failed": report.failed,
                    "unavailable": report.unavailable,
                    "skipped": report.skipped,
                }
            )
        )
