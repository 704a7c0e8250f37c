"""SAML SSO per organization (public schema: discovery by email must see every organization's IdP).

The shape is agreed with the domain-verification part (apps/sso/domains.py): see docs/sso.md.
"""

from django.db import models

from apps.rbac.models import Role

# A domain name in lowercase ASCII (IDNA/punycode already applied): labels of letters, digits and
# inner hyphens, at least two labels.
DOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$"


class IdentityProvider(models.Model):
    """An organization's SAML identity provider (at most one per organization)."""

    organization = models.OneToOneField(
        "tenants.Organization", on_delete=models.CASCADE, related_name="identity_provider"
    )
    entity_id = models.CharField(max_length=1024)  # the IdP's EntityID, the Issuer of its responses
    sso_url = models.URLField(max_length=2048)  # SingleSignOnService, HTTP-Redirect binding
    # The IdP's signing certificates, base64 DER; several during a certificate rollover.
    certificates = models.JSONField(default=list)
    metadata_url = models.URLField(max_length=2048, blank=True)  # when configured from a URL
    metadata_xml = models.TextField(blank=True)  # as pasted or fetched (bounded by the service)
    metadata_fetched_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=False)  # SP-initiated sign-in through this IdP is offered
    allow_idp_initiated = models.BooleanField(default=False)  # unsolicited responses accepted (opt-in)
    default_role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)  # JIT members
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(default_role__in=Role.values), name="sso_idp_default_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.entity_id}"


class SsoDomain(models.Model):
    """An email domain an organization claims; verified by a DNS TXT record or an operator."""

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="sso_domains")
    domain = models.CharField(max_length=253)  # lowercased, IDNA/punycode, validated
    verification_token = models.CharField(max_length=64)  # TXT value "cognitionos-verification=<token>"
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_by = models.CharField(max_length=300, blank=True)  # "dns" or "operator:<staff email>"
    require_sso = models.BooleanField(default=False)  # members with this domain must sign in through SSO
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "domain"], name="sso_domain_unique_per_organization"),
            # A domain belongs to one organization once verified: discovery by email must be unambiguous.
            models.UniqueConstraint(
                fields=["domain"], condition=models.Q(verified_at__isnull=False), name="sso_domain_verified_once"
            ),
            models.CheckConstraint(
                condition=models.Q(require_sso=False) | models.Q(verified_at__isnull=False),
                name="sso_domain_require_only_verified",
            ),
            models.CheckConstraint(condition=models.Q(domain__regex=DOMAIN_PATTERN), name="sso_domain_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.domain}"
