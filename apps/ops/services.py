from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.accounts.services import operator_ensure
from apps.tenants.models import Organization
from apps.tenants.services import organization_create

DEMO_SLUG = "demo"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
DEMO_GUIDES = ("knowledge.md", "portal.md", "jobs.md", "workflows.md")
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
        demo_knowledge_base_ensure(organization=organization)
    return DemoStack(organization=organization, operator_email=operator.email, operator_password=password)


def demo_knowledge_base_ensure(*, organization: Organization) -> None:
    """A knowledge base of CognitionOS's own guides, so a new demo has something to search (and
    the worker ingests it as soon as it starts, embedded by whatever model the catalog offers:
    the simulated one when no provider is configured, which the portal labels as simulated)."""
    from apps.knowledge.services import document_upload, knowledge_base_create

    guides = [path for path in (DOCS_DIR / name for name in DEMO_GUIDES) if path.is_file()]
    if not guides:
        return  # not run from a checkout: no guides to load
    actor = Principal.system("make run")
    with schema_context(organization.schema_name):
        base = knowledge_base_create(
            organization=organization,
            principal=actor,
            name="CognitionOS guides",
            description="The project's own documentation, loaded by make run as an example.",
        )
        for path in guides:
            document_upload(
                organization=organization,
                principal=actor,
                knowledge_base=base,
                filename=path.name,
                content_type="text/markdown",
                content=path.read_bytes(),
            )


def portal_url(organization: Organization, port: int) -> str:
    return f"http://{organization.slug}.{settings.BASE_DOMAIN}:{port}/"
