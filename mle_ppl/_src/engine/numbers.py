"""Numbers as text for tables: correctly rounded significant digits, tiny p-values bounded.

Used by every layer that shows numbers (results' ``__str__``, the CLI tables), so it sits in the
engine layer, below inference, report and the CLI. Every function returns digits that are a
correct rounding of the value (Python's ``format`` rounds correctly) or a word (``NaN``,
``inf``, ``—``); nothing here truncates.
"""

from __future__ import annotations

import math

#: p-values below this are shown as ``<1e-300``: a two-sided normal p-value underflows to 0.0
#: near |z| = 38.6, and below 1e-300 float64 loses relative precision (subnormals), so no digit
#: shown there would be trustworthy.
P_FLOOR = 1e-300


def fmt(value, digits: int = 6) -> str:
    """``value`` with ``digits`` significant digits; NaN/inf and None spelled out."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def fmt_p(value, digits: int = 3) -> str:
    """A p-value: like :func:`fmt`, but ``<1e-300`` below :data:`P_FLOOR` (never a bare 0)."""
    if value is None:
        return "—"
    v = float(value)
    if math.isfinite(v) and 0 <= v < P_FLOOR:
        return f"<{P_FLOOR:.0e}"
    return fmt(v, digits)
