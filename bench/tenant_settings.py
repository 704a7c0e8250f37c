"""Development settings plus bench.tenantapp as a tenant app (bench/tenants.py only)."""

import os
import sys

from cognitionos.settings.development import *  # noqa: F403
from cognitionos.settings.development import INSTALLED_APPS, TENANT_APPS

if os.environ.get("BENCH_TENANT_MIGRATIONS"):
    sys.path.insert(0, os.environ["BENCH_TENANT_MIGRATIONS"])

INSTALLED_APPS = [*INSTALLED_APPS, "bench.tenantapp"]
TENANT_APPS = [*TENANT_APPS, "bench.tenantapp"]
MIGRATION_MODULES = {"benchtenant": "benchtenant_migrations"}
# Builds and the script's figures take no ready schema; bench/tenants.py turns the pool on for its own figure.
TENANT_READY_SCHEMAS = 0
