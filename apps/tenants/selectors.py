from django.conf import settings
from django.db.models import QuerySet

from apps.tenants.models import Domain, Organization


def organization_list() -> QuerySet[Organization]:
    return Organization.objects.exclude(schema_name="public").select_related("plan").order_by("slug")


def organization_for_host(host: str) -> Organization | None:
    """The organization a portal host name belongs to: <slug>.<BASE_DOMAIN> or a custom domain."""
    suffix = "." + settings.BASE_DOMAIN
    if host.endswith(suffix):
        slug = host[: -len(suffix)]
        if "." in slug:
            return None
        return Organization.objects.select_related("plan").exclude(schema_name="public").filter(slug=slug).first()
    domain = Domain.objects.select_related("tenant__plan").filter(domain=host).first()
    return domain.tenant if domain is not None else None


def public_organization() -> Organization:
    return Organization.objects.get(schema_name="public")
