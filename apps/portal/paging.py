"""Keyset pagination for the portal's long lists (audit log, members, invitations, API keys).

A page is found by the key of the row it starts after (`?after=`, keys greater than) or before
(`?before=`, keys smaller than), never by OFFSET: a page deep in a long list costs what the first
one does, and rows added or removed meanwhile don't shift the pages. One query per page (one more
only when paging backwards with nothing more behind), whatever the number of rows.

Several lists on one page each take a `prefix` for their cursors (`members_after=`...), and the
links of one list keep the others' cursors (and the page's filters) through `keep`.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

DEFAULT_PAGE_SIZE = 50
# A key is a bigint: a longer cursor can only be a hostile one (and would overflow the query).
_CURSOR_MAX_DIGITS = 18

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class KeysetPage(Generic[M]):
    items: list[M]
    next_query: str | None  # the query string of the next page's link, None on the last page
    previous_query: str | None  # the previous page's, None on the first page
    first_query: str | None  # the first page's (the others' cursors and filters kept), None on it

    @property
    def paged(self) -> bool:
        return self.next_query is not None or self.previous_query is not None


def cursor_param(request: HttpRequest, name: str) -> int | None:
    """A cursor from the query string: a key, or None for anything else (ignored, first page)."""
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() and len(value) <= _CURSOR_MAX_DIGITS else None


def cursor_params(request: HttpRequest, prefixes: list[str]) -> dict[str, str]:
    """The valid cursors of these lists present in the request (to be kept by the others' links)."""
    kept: dict[str, str] = {}
    for prefix in prefixes:
        for side in ("after", "before"):
            value = cursor_param(request, f"{prefix}{side}")
            if value is not None:
                kept[f"{prefix}{side}"] = str(value)
    return kept


def keyset_page(
    rows: QuerySet[M],
    *,
    request: HttpRequest,
    key: str = "pk",
    descending: bool = False,
    prefix: str = "",
    keep: Mapping[str, str] | None = None,
    size: int = DEFAULT_PAGE_SIZE,
) -> KeysetPage[M]:
    """One page of `rows` ordered by `key` (unique, indexed), from the cursors in the request."""
    after = cursor_param(request, f"{prefix}after")
    before = cursor_param(request, f"{prefix}before")
    # In the page's order: "onward" is toward the next page, "back" toward the previous one.
    onward_param, back_param = ("before", "after") if descending else ("after", "before")
    onward = before if descending else after
    back = after if descending else before
    order, reverse = (f"-{key}", key) if descending else (key, f"-{key}")

    def query(param: str, value: object) -> str:
        return urllib.parse.urlencode({**(keep or {}), f"{prefix}{param}": value})

    first = urllib.parse.urlencode(dict(keep or {}))
    if back is not None:
        # Walk backwards from the cursor and turn the rows round: the page just before it.
        lookup = f"{key}__gt" if descending else f"{key}__lt"
        fetched = list(rows.filter(**{lookup: back}).order_by(reverse)[: size + 1])
        items = list(reversed(fetched[:size]))
        more_back = len(fetched) > size
        return KeysetPage(
            items=items,
            # The cursor's row (or what came after it) lies onward.
            next_query=query(onward_param, getattr(items[-1], key)) if items else None,
            previous_query=query(back_param, getattr(items[0], key)) if items and more_back else None,
            first_query=first if more_back else None,
        )
    if onward is not None:
        rows = rows.filter(**{f"{key}__lt" if descending else f"{key}__gt": onward})
    fetched = list(rows.order_by(order)[: size + 1])
    items = fetched[:size]
    return KeysetPage(
        items=items,
        next_query=query(onward_param, getattr(items[-1], key)) if len(fetched) > size else None,
        previous_query=query(back_param, getattr(items[0], key)) if onward is not None and items else None,
        first_query=first if onward is not None else None,
    )


# -- lists keyed by time and a UUID (jobs, agents, workflow runs, webhook deliveries) ---------------

# A cursor `<microseconds since the epoch>_<uuid hex>`: the row's time and its id, the tie-breaker
# (rows written in one transaction share `created_at`, PostgreSQL's transaction time).
_TIME_CURSOR = re.compile(r"\A(\d{1,18})_([0-9a-f]{32})\Z")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time_cursor_of(row: Model, time_field: str) -> str:
    moment: dt.datetime = getattr(row, time_field)
    micros = (moment - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}_{uuid.UUID(str(row.pk)).hex}"


def _time_cursor_param(request: HttpRequest, name: str) -> tuple[dt.datetime, uuid.UUID] | None:
    found = _TIME_CURSOR.match(request.GET.get(name, ""))
    if found is None:
        return None
    try:
        moment = _EPOCH + dt.timedelta(microseconds=int(found.group(1)))
    except OverflowError:  # past the year 9999: a hostile cursor, read as none
        return None
    return moment, uuid.UUID(found.group(2))


def keyset_page_by_time(
    rows: QuerySet[M],
    *,
    request: HttpRequest,
    time_field: str = "created_at",
    prefix: str = "",
    keep: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    size: int = DEFAULT_PAGE_SIZE,
) -> KeysetPage[M]:
    """`keyset_page` for rows whose primary key is a UUID, newest first: ordered by (`time_field`,
    pk) descending, which an index on (`time_field`) keeps cheap. `?before=` goes to older rows,
    `?after=` back to newer ones; the same KeysetPage (and _pager.html) as `keyset_page`. `keep` may
    be pairs, for a filter given more than once (`status=queued&status=running`)."""
    before = _time_cursor_param(request, f"{prefix}before")
    after = _time_cursor_param(request, f"{prefix}after")

    kept = list(keep.items()) if isinstance(keep, Mapping) else list(keep or ())

    def query(param: str, row: Model) -> str:
        return urllib.parse.urlencode([*kept, (f"{prefix}{param}", _time_cursor_of(row, time_field))])

    def older(cursor: tuple[dt.datetime, uuid.UUID]) -> Q:
        return Q(**{f"{time_field}__lt": cursor[0]}) | Q(**{time_field: cursor[0], "pk__lt": cursor[1]})

    def newer(cursor: tuple[dt.datetime, uuid.UUID]) -> Q:
        return Q(**{f"{time_field}__gt": cursor[0]}) | Q(**{time_field: cursor[0], "pk__gt": cursor[1]})

    first = urllib.parse.urlencode(kept)
    newest_first = (f"-{time_field}", "-pk")
    if after is not None and before is None:
        # Walk toward newer rows from the cursor and turn them round: the page just before it.
        fetched = list(rows.filter(newer(after)).order_by(time_field, "pk")[: size + 1])
        items = list(reversed(fetched[:size]))
        more_newer = len(fetched) > size
        return KeysetPage(
            items=items,
            next_query=query("before", items[-1]) if items else None,
            previous_query=query("after", items[0]) if items and more_newer else None,
            first_query=first if more_newer else None,
        )
    if before is not None:
        rows = rows.filter(older(before))
    fetched = list(rows.order_by(*newest_first)[: size + 1])
    items = fetched[:size]
    return KeysetPage(
        items=items,
        next_query=query("before", items[-1]) if len(fetched) > size else None,
        previous_query=query("after", items[0]) if before is not None and items else None,
        first_query=first if before is not None else None,
    )
