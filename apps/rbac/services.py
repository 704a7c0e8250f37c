from django.db import transaction

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.rbac.models import Membership, Role
from apps.tenants.models import Organization


@transaction.atomic
def membership_create(*, user: User, organization: Organization, role: Role, actor: Principal) -> Membership:
    membership = Membership.objects.create(user=user, organization=organization, role=role)
    audit_record(
        organization=organization,
        actor=actor,
        action="membership.created",
        target=membership,
        metadata={"user_id": user.pk, "user": user.email, "role": role},
    )
    return membership
