"""The operator log and support grants: the database keeps their invariants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.ops.models import SupportAccessGrant
from apps.tenants.models import Organization


def test_support_grant_longer_than_eight_hours_is_refused_by_the_database(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization, _ = two_tenants
    operator = User.objects.create_user(email="op-bound@cognitionos.example.com", is_staff=True)
    now = timezone.now()
    SupportAccessGrant.objects.create(
        operator=operator,
        organization=organization,
        reason="ticket 1",
        created_at=now,
        expires_at=now + timedelta(hours=8),
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        SupportAccessGrant.objects.create(
            operator=operator,
            organization=organization,
            reason="ticket 2",
            created_at=now,
            expires_at=now + timedelta(hours=8, seconds=1),
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        SupportAccessGrant.objects.create(
            operator=operator, organization=organization, reason="", created_at=now, expires_at=now + timedelta(hours=1)
        )
