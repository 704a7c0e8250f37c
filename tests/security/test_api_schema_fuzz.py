"""Schemathesis over the REST API's own OpenAPI schema, with API keys of two organizations.

Every operation gets generated requests (valid and invalid ones) sent through the WSGI app, inside
the test's transaction: no answer may be a server error, break its declared schema, carry a status
or content type the schema does not declare. `make test` runs 10 examples per operation, derandomized
(the suite's time budget); `make fuzz` runs FUZZ_EXAMPLES (200) with a fresh seed each time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.apikeys.selectors import apikey_cache_forget
from apps.apikeys.services import apikey_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
# The suite's run is the same every time (what it once found stays found); `make fuzz` explores.
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# The schema /api/schema/ serves, generated the same way without a request (collection has no
# database to answer one); requests go to the WSGI app in-process.
_served = SchemaGenerator().get_schema(public=True)  # type: ignore[no-untyped-call]
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(_served)))
schema.app = get_wsgi_application()


@pytest.fixture
def fuzz_keys(two_tenants: tuple[Organization, Organization]) -> Iterator[list[str]]:
    """An API key of each organization; requests run in this test's transaction, as the test
    client's do (Django's request signals would close the connection of the test)."""
    apikey_cache_forget()
    tenant_connection().set_schema_to_public()
    keys = [apikey_create(organization=org, name="fuzz", actor=TEST_ACTOR).key for org in two_tenants]
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield keys
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        apikey_cache_forget()
        tenant_connection().set_schema_to_public()


def test_the_fuzzed_schema_is_the_one_served(db: None) -> None:
    served = Client(HTTP_HOST="localhost").get("/api/schema/?format=json")
    assert served.status_code == 200
    assert served.json() == schema.raw_schema


@schema.parametrize()
@schema.given(organization=st.sampled_from([0, 1]))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=DERANDOMIZE,
)
def test_api_answers_as_its_schema_says(case: schemathesis.Case[Any], organization: int, fuzz_keys: list[str]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_keys[organization]}"}, checks=CHECKS)
