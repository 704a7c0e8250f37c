import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.selectors import VERIFY_BATCH, audit_chain_verify
from apps.tenants.models import Organization


def _anchor(value: str) -> tuple[int, str]:
    sequence, _, digest = value.partition(":")
    if not sequence.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("an anchor is SEQUENCE:HASH, as `audit verify` prints its chain head")
    return int(sequence), digest.lower()


class Command(BaseCommand):
    help = "The audit log: check an organization's hash chain."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        verify = actions.add_parser(
            "verify", help="Recompute every event's hash in order; report the first broken link (exit 1)."
        )
        verify.add_argument("--tenant", required=True, help="The organization's slug")
        verify.add_argument("--batch-size", type=int, default=VERIFY_BATCH, help="Events read per query")
        verify.add_argument(
            "--anchor",
            action="append",
            default=[],
            type=_anchor,
            metavar="SEQUENCE:HASH",
            help="An event's hash kept from an earlier run (its `chain head`); it must still be there (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.exclude(schema_name="public").filter(slug=options["tenant"]).first()
        if organization is None:
            raise CommandError(f"no organization {options['tenant']!r}", returncode=2)
        report = audit_chain_verify(
            organization=organization, anchors=dict(options["anchor"]), batch_size=max(1, options["batch_size"])
        )
        if report.broken is None:
            self.stdout.write(f"OK: {report.count} events, chain head {report.count}:{report.head_hash}")
            return
        broken = report.broken
        if broken.event_id == 0:
            raise CommandError(
                f"BROKEN: the chain ends at sequence {report.count}, before anchored event {broken.sequence} "
                f"(hash {broken.expected}): events were removed from its end",
                returncode=1,
            )
        raise CommandError(
            f"BROKEN at event id={broken.event_id} (sequence {broken.sequence}): its {broken.field} is not "
            f"what the chain implies\n  expected: {broken.expected}\n  stored:   {broken.stored}\n"
            f"{report.count} events before it verified",
            returncode=1,
        )
