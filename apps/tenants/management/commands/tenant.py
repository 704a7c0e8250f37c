import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.principals import Principal
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.services import organization_create


def _as_dict(organization: Organization) -> dict[str, Any]:
    domain = next((d for d in organization.domains.all() if d.is_primary), None)  # prefetched
    return {
        "id": organization.pk,
        "slug": organization.slug,
        "name": organization.name,
        "schema": organization.schema_name,
        "status": organization.status,
        "plan": organization.plan.code,
        "domain": domain.domain if domain else None,
        "created_at": organization.created_at.isoformat(),
    }


class Command(BaseCommand):
    help = "Create and list organizations."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)
        create = actions.add_parser("create", help="Create an organization with its own schema.")
        create.add_argument("slug", help="DNS-safe name: the portal is <slug>.<BASE_DOMAIN>")
        create.add_argument("--name", required=True)
        create.add_argument("--owner", required=True, help="Owner's email address")
        create.add_argument("--plan", default="free", help="free, pro or enterprise")
        create.add_argument("--json", action="store_true", help="Print the organization as one JSON object")
        listing = actions.add_parser("list", help="List organizations.")
        listing.add_argument("--json", action="store_true", help="Print a JSON array")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "create":
            self._create(options)
        else:
            self._list(options)

    def _create(self, options: dict[str, Any]) -> None:
        try:
            organization = organization_create(
                slug=options["slug"],
                name=options["name"],
                owner_email=options["owner"],
                plan_code=options["plan"],
                actor=Principal.system("cli"),
            )
        except ProvisioningError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        organization = organization_list().prefetch_related("domains").get(pk=organization.pk)
        if options["json"]:
            self.stdout.write(json.dumps(_as_dict(organization)))
        else:
            data = _as_dict(organization)
            self.stdout.write(
                f"Created {data['slug']} ({data['name']}) on plan {data['plan']}: http://{data['domain']}/"
            )

    def _list(self, options: dict[str, Any]) -> None:
        organizations = [_as_dict(org) for org in organization_list().prefetch_related("domains")]
        if options["json"]:
            self.stdout.write(json.dumps(organizations))
            return
        for org in organizations:
            self.stdout.write(f"{org['slug']:<24} {org['status']:<10} {org['plan']:<12} {org['name']}")
