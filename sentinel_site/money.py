"""Money as people read it: `$12.34` for amounts, `$100` or `$0.5` for limits and prices.

The ledger keeps eight decimals (a turn can cost a fraction of a cent); an amount under a cent is
shown with its significant digits (`$0.00042`) rather than as `$0.00`, which would read as free.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def _decimal(value: Decimal | float | int | None) -> Decimal:
    return Decimal(0) if value is None else value if isinstance(value, Decimal) else Decimal(str(value))


def money(value: Decimal | float | int | None) -> str:
    """An amount spent or held: two decimals with thousands separators; sub-cent amounts keep up
    to eight decimals without trailing zeros."""
    amount = _decimal(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if 0 < amount < CENT:
        return f"{sign}${_plain(amount.quantize(Decimal('0.00000001'), rounding=ROUND_HALF_UP))}"
    return f"{sign}${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"


def limit(value: Decimal | float | int | None) -> str:
    """A limit or a price, exactly as set and without trailing zeros: `$100`, `$12.5`, `$0.15`."""
    amount = _decimal(value)
    return f"{'-' if amount < 0 else ''}${_plain(abs(amount))}"


def _plain(amount: Decimal) -> str:
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    whole, dot, fraction = text.partition(".")
    return f"{int(whole):,}{dot}{fraction}"


def share(part: Decimal | float | int | None, whole: Decimal | float | int | None) -> float:
    """part / whole as a fraction (1.0 = all of it); an empty or zero whole counts as all used."""
    total = _decimal(whole)
    return float(_decimal(part) / total) if total > 0 else 1.0
