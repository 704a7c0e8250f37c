"""Dollar amounts that are never rounded out of sight: budgets accept limits to the millionth of a
dollar and single calls cost fractions of a cent, so a fixed two or four decimals would show a
$0.000001 limit, or what one cheap call spent, as "0.00"."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template

register = template.Library()

# Ledger and budget amounts are stored with at most 8 decimal places.
_MOST_PLACES = 8


@register.filter
def dollars(value: Decimal | float | int | str | None, places: int = 2) -> str:
    """`value` with at least `places` decimals, more (up to 8) when the amount has digits there:
    10 → "10.00", 1.25 with 4 → "1.2500", 0.000001 → "0.000001" (as floatformat:<places> writes
    every amount it does not hide)."""
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not amount.is_finite():
        return str(value)
    exponent = amount.normalize().as_tuple().exponent
    needed = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    shown = max(int(places), min(_MOST_PLACES, needed))
    return f"{amount:.{shown}f}"
