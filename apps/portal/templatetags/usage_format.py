"""How the dashboard writes its numbers: dollars, counts, rates and latencies, "—" for none."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()

NONE = "—"


@register.filter
def usd(value: Decimal | float | None) -> str:
    """$1,234.56; below a dollar with up to four decimals ($0.0042, $0.50), as single calls cost
    fractions of a cent; below a hundredth of a cent two significant digits ($0.000016)."""
    if value is None:
        return NONE
    amount = Decimal(value)
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    if amount and abs(amount) < Decimal("0.0001"):
        # What one cheap call costs: two significant digits, never "$0.00".
        return f"${amount:.{min(8, 1 - amount.adjusted())}f}"
    digits = f"{amount:.4f}".rstrip("0")
    return "$" + (digits + "0" * (2 - len(digits.split(".")[1])))


@register.filter
def count(value: int | None) -> str:
    return NONE if value is None else f"{value:,}"


@register.filter
def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


@register.filter
def latency(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"
