"""`last_used_at` is written by a background flush in batches, never once per request."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from apps.apikeys import usage
from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_create
from apps.apikeys.usage import apikey_last_used_flush, apikey_used
from apps.tenants.models import Organization
from cognitionos.background_batch import BackgroundBatch
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR


def test_many_keys_are_written_in_one_statement(two_tenants: tuple[Organization, Organization]) -> None:
    apikey_last_used_flush()
    keys = [
        apikey_create(organization=organization, name="k", actor=TEST_ACTOR, scopes=["jobs:read"]).api_key
        for organization in (*two_tenants, two_tenants[0])
    ]
    for _ in range(10):
        for api_key in keys:
            apikey_used(api_key.pk)
    with CaptureQueriesContext(connection) as queries:
        assert apikey_last_used_flush() == 3
    assert sum("UPDATE" in query["sql"] for query in queries.captured_queries) == 1
    assert all(ApiKey.objects.get(pk=api_key.pk).last_used_at is not None for api_key in keys)


@pytest.mark.integration
def test_the_background_flush_writes_without_being_asked(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="last-used")
    api_key = apikey_create(organization=organization, name="k", actor=TEST_ACTOR, scopes=["jobs:read"]).api_key
    # Its own batch and thread, so the suite's shared one stays without a thread.
    used: BackgroundBatch[tuple[int, float]] = BackgroundBatch(
        "test-last-used",
        write=usage._write,
        interval_s=lambda: 0.2,
        keep_on_failure=True,
        key=lambda use: use[0],
    )
    with override_settings(API_KEY_LAST_USED_FLUSH_SECONDS=0.2):
        used.add((api_key.pk, time.time()))
        deadline = time.monotonic() + 10
        while ApiKey.objects.get(pk=api_key.pk).last_used_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is not None
