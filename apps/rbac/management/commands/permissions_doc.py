from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.rbac.docs import permissions_doc_path, permissions_doc_render


class Command(BaseCommand):
    help = "Write docs/permissions.md from the permission matrix (--check: fail when it differs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the file is stale")

    def handle(self, *args: Any, **options: Any) -> None:
        path = permissions_doc_path()
        wanted = permissions_doc_render()
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if options["check"]:
            if current != wanted:
                raise CommandError(f"{path} is stale: run `manage.py permissions_doc` and commit the result")
            self.stdout.write(f"{path} is up to date")
            return
        if current != wanted:
            path.write_text(wanted, encoding="utf-8")
            self.stdout.write(f"wrote {path}")
        else:
            self.stdout.write(f"{path} is up to date")
