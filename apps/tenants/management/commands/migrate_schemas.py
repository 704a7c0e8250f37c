import os
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

from apps.tenants.checks import database_require_extensions
from apps.tenants.rollout import DEFAULT_LOCK_TIMEOUT_MS, RolloutSummary, migration_state_forget, organizations_migrate
from apps.tenants.template import template_migrate


class Command(MigrateSchemasCommand):
    """Public schema, then the template new organizations are cloned from, then every organization
    whose schema is behind (apps.tenants.rollout: found with one query, migrated in parallel).

    With a schema, an app label or a migration name, django-tenants' own pass runs as before, and
    the organizations it touched are read again by the next full run."""

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--jobs",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="Processes migrating organization schemas at once (default: CPUs, at most 4).",
        )
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Read every organization schema's migrations instead of trusting the recorded state.",
        )
        parser.add_argument(
            "--lock-timeout",
            type=int,
            default=DEFAULT_LOCK_TIMEOUT_MS,
            help="Milliseconds a schema's migration waits for a table lock before that schema fails.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["jobs"] < 1 or options["lock_timeout"] < 1:
            raise CommandError("--jobs and --lock-timeout must be at least 1")
        database_require_extensions()
        targeted = options.get("schema_name") or options.get("app_label") or options.get("fake") or options.get("plan")
        if targeted or (options.get("shared") and not options.get("tenant")):
            super().handle(*args, **options)
            if self.sync_tenant and self.schema_name and self.schema_name != self.PUBLIC_SCHEMA_NAME:
                migration_state_forget(schemas=[self.schema_name])
            elif self.sync_tenant and targeted:
                migration_state_forget()
            if self.sync_tenant and self.schema_name in (None, "", self.PUBLIC_SCHEMA_NAME):
                template_migrate(verbosity=int(options.get("verbosity", 1)))
            return
        if not options.get("tenant"):
            super().handle(*args, **{**options, "shared": True})  # django-tenants: the public schema only
        verbosity = int(options.get("verbosity", 1))
        template_migrate(verbosity=verbosity)
        summary = organizations_migrate(
            jobs=options["jobs"],
            verify=options["verify"],
            lock_timeout_ms=options["lock_timeout"],
            progress=self._progress if verbosity >= 1 else None,
        )
        if verbosity >= 1:
            counts = ", ".join(f"{count} {status}" for status, count in summary.counts.items() if count)
            which = "read" if options["verify"] else "behind the template"
            self.stdout.write(
                f"Organization schemas {which}: {summary.considered} ({counts or 'none'}), {summary.seconds:.1f} s"
            )
        if summary.failures:
            for failure in summary.failures:
                self.stderr.write(f"  {failure.schema}: {failure.error}")
            raise CommandError(
                f"{len(summary.failures)} organization schema(s) failed to migrate (listed above); "
                "the others are done. Fix the cause and run migrate again: it resumes with those."
            )

    def _progress(self, summary: RolloutSummary) -> None:
        if summary.done == summary.considered or summary.done % 500 < 20:
            self.stdout.write(
                f"  organizations: {summary.done}/{summary.considered} "
                f"({summary.counts['migrated']} migrated, {summary.counts['failed']} failed)"
            )
