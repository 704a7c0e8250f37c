import copy
import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from apps.billing.signals import entitlements_changed
from apps.tenants.models import Domain, Organization

Key = TypeVar("Key", bound=Hashable)


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


# Host or id -> (expires_at, organization). Per process: resolving a tenant costs no query on the
# hot path, and a status change made elsewhere takes effect here within TENANT_RESOLUTION_CACHE_SECONDS.
_HOST_CACHE: dict[str, tuple[float, Organization]] = {}
_ID_CACHE: dict[int, tuple[float, Organization]] = {}
_CACHE_MAX_ENTRIES = 10_000
# When an entry expires, every thread that asks for it at once would read it again: a threaded
# worker's 150 threads taking tasks of one organization sent up to 150 identical queries every few
# seconds. One thread reads it, the others wait for that read; striped locks, so that neither a
# slow read nor the number of names asked for (host names come from requests) grows anything.
# A read that takes longer than this (a database at its pool's limit) no longer holds the others.
_LOADING = [threading.Lock() for _ in range(64)]
_LOADING_WAIT_SECONDS = 2.0


def _remembered(
    cache: dict[Key, tuple[float, Organization]], key: Key, load: Callable[[], Organization | None]
) -> Organization | None:
    """cache[key] while fresh, else `load()` remembered; each caller gets its own copy of the row."""
    ttl = settings.TENANT_RESOLUTION_CACHE_SECONDS
    if ttl <= 0:
        return load()
    entry = cache.get(key)
    if entry is not None and entry[0] > time.monotonic():
        return copy.copy(entry[1])
    loading = _LOADING[hash(key) % len(_LOADING)]
    locked = loading.acquire(timeout=_LOADING_WAIT_SECONDS)
    try:
        entry = cache.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return copy.copy(entry[1])
        organization = load()
        if organization is None:
            return None
        if len(cache) >= _CACHE_MAX_ENTRIES:
            cache.clear()
        cache[key] = (now + ttl, organization)
        return copy.copy(organization)
    finally:
        if locked:
            loading.release()


def organization_for_host_cached(host: str) -> Organization | None:
    """organization_for_host, remembered briefly."""
    return _remembered(_HOST_CACHE, host, lambda: organization_for_host(host))


def organization_by_id_cached(organization_id: int) -> Organization | None:
    """An organization by id (with its plan), remembered briefly like hosts: a worker running many
    tasks of one organization asks the database once per TENANT_RESOLUTION_CACHE_SECONDS."""
    return _remembered(_ID_CACHE, organization_id, lambda: organization_by_id(organization_id))


def organization_by_id(organization_id: int) -> Organization | None:
    return Organization.objects.select_related("plan").filter(pk=organization_id).first()


def organization_cache_forget(organization: Organization | None = None) -> None:
    """Drop this process's cached resolutions (of one organization, or all)."""
    if organization is None:
        _HOST_CACHE.clear()
        _ID_CACHE.clear()
        return
    _ID_CACHE.pop(organization.pk, None)
    for host, (_, cached) in list(_HOST_CACHE.items()):
        if cached.pk == organization.pk:
            _HOST_CACHE.pop(host, None)


_CATALOG_COUNTS = """
WITH rel AS (
    SELECT c.oid, c.relkind, c.reltoastrelid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s
)
SELECT
    (SELECT count(*) FROM rel WHERE relkind IN ('r', 'p')),
    (SELECT count(*) FROM rel WHERE relkind IN ('i', 'I')),
    (SELECT count(*) FROM rel WHERE relkind = 'S'),
    (SELECT count(*) FROM rel WHERE relkind NOT IN ('r', 'p', 'i', 'I', 'S')),
    (SELECT count(*) FROM rel WHERE reltoastrelid <> 0),
    (SELECT count(*) FROM rel JOIN pg_index i ON i.indrelid = rel.reltoastrelid),
    (SELECT count(*) FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
     WHERE n.nspname = %(schema)s),
    (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %(schema)s),
    (SELECT count(*) FROM pg_trigger tg JOIN rel ON rel.oid = tg.tgrelid),
    (SELECT count(*) FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid WHERE NOT a.attisdropped)
"""


def schema_catalog_counts(schema: str) -> dict[str, int]:
    """What one schema adds to PostgreSQL's catalogs, by kind of object.

    `relations` is its rows in pg_class: tables, indexes, sequences, other relations, plus the
    TOAST table (and its index) PostgreSQL keeps in pg_toast for each table with wide columns.
    `types` counts each table's row type and its array type; `triggers` includes the internal ones
    that enforce foreign keys (four per key); `columns` is pg_attribute (system columns included,
    dropped ones left out: the template keeps those of its migrations, an organization has none).
    """
    with connection.cursor() as cursor:
        cursor.execute(_CATALOG_COUNTS, {"schema": schema})
        row = cursor.fetchone()
    names = (
        "tables", "indexes", "sequences", "other_relations", "toast_tables", "toast_indexes",
        "constraints", "types", "triggers", "columns",
    )  # fmt: skip
    counts = dict(zip(names, (int(value) for value in row), strict=True))
    counts["relations"] = sum(
        counts[kind] for kind in ("tables", "indexes", "sequences", "other_relations", "toast_tables", "toast_indexes")
    )
    return counts


def _entitlements_changed(organization: Organization | None = None, **_: object) -> None:
    # The resolved organization carries its plan: a plan change must not wait for the TTL here.
    organization_cache_forget(organization)


entitlements_changed.connect(_entitlements_changed, dispatch_uid="tenants.organization_cache_forget")
