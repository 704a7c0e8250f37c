from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from apps.accounts.principals import Principal
from apps.accounts.services import operator_ensure
from apps.tenants.models import Organization
from apps.tenants.services import organization_create

DEMO_SLUG = "demo"
OPERATOR_EMAIL = "operator@cognitionos.localhost"


@dataclass(frozen=True)
class DemoStack:
    organization: Organization
    operator_email: str
    operator_password: str | None  # only when the operator was created just now


def demo_ensure() -> DemoStack:
    """The operator account and the demo organization `make run` starts with, created once."""
    operator, password = operator_ensure(email=OPERATOR_EMAIL)
    organization = Organization.objects.filter(slug=DEMO_SLUG).first()
    if organization is None:
        organization = organization_create(
            slug=DEMO_SLUG,
            name="Demo organization",
            owner_email=operator.email,
            plan_code="pro",
            actor=Principal.system("make run"),
        )
    return DemoStack(organization=organization, operator_email=operator.email, operator_password=password)


def portal_url(organization: Organization, port: int) -> str:
    return f"http://{organization.slug}.{settings.BASE_DOMAIN}:{port}/"
