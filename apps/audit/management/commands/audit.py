import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.selectors import UNCHAINED_MAX_AGE_SECONDS, VERIFY_BATCH, ChainBreak, audit_chain_verify
from apps.audit.services import audit_chain_link
from apps.tenants.models import Organization


def _anchor(value: str) -> tuple[int, str]:
    sequence, _, digest = value.partition(":")
    if not sequence.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("an anchor is SEQUENCE:HASH, as `audit verify` prints its chain head")
    return int(sequence), digest.lower()


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 10**7:
        raise argparse.ArgumentTypeError("a number of seconds, from 0 to 10000000")
    return seconds


class Command(BaseCommand):
    help = "The audit log: check an organization's hash chain, or link its unchained events now."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        verify = actions.add_parser(
            "verify",
            help="Recompute every event's hash in order; report the first broken link, or events the chainer "
            "left unchained too long (exit 1).",
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
        verify.add_argument(
            "--unchained-max-age",
            type=_seconds,
            default=UNCHAINED_MAX_AGE_SECONDS,
            metavar="SECONDS",
            help="An event still unchained this long after it was written is a problem: the chainer is stuck",
        )
        chain = actions.add_parser(
            "chain",
            help="Link the organization's committed, unchained events into its chain now (as the chainer does).",
        )
        chain.add_argument("--tenant", required=True, help="The organization's slug")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.exclude(schema_name="public").filter(slug=options["tenant"]).first()
        if organization is None:
            raise CommandError(f"no organization {options['tenant']!r}", returncode=2)
        if options["action"] == "chain":
            linked = audit_chain_link(organization=organization)
            self.stdout.write(f"Linked {linked} events")
            return
        report = audit_chain_verify(
            organization=organization,
            anchors=dict(options["anchor"]),
            batch_size=max(1, options["batch_size"]),
            unchained_max_age=options["unchained_max_age"],
        )
        if report.broken is not None:
            raise _broken(report.broken, report.count)
        unchained = report.unchained
        if report.stuck:
            raise CommandError(
                f"STUCK: {unchained.stale} events unchained for more than {options['unchained_max_age']:g} s "
                f"(the oldest written {unchained.oldest_age_seconds:.0f} s ago; "
                f"next in line: id={unchained.first_id}): "
                f"is the chainer running? ({report.count} chained events verified, chain head "
                f"{report.count}:{report.head_hash})",
                returncode=1,
            )
        pending = ""
        if unchained.count:
            pending = (
                f"; {unchained.count} events not chained yet, the oldest written "
                f"{unchained.oldest_age_seconds:.1f} s ago (allowed: {options['unchained_max_age']:g} s)"
            )
        self.stdout.write(f"OK: {report.count} events, chain head {report.count}:{report.head_hash}{pending}")


def _broken(broken: ChainBreak, verified: int) -> CommandError:
    if broken.event_id == 0:
        return CommandError(
            f"BROKEN: the chain ends at sequence {verified}, before anchored event {broken.sequence} "
            f"(hash {broken.expected}): events were removed from its end",
            returncode=1,
        )
    return CommandError(
        f"BROKEN at event id={broken.event_id} (sequence {broken.sequence}): its {broken.field} is not "
        f"what the chain implies\n  expected: {broken.expected}\n  stored:   {broken.stored}\n"
        f"{verified} events before it verified",
        returncode=1,
    )
