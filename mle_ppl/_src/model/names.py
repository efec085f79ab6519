"""Names match the way Python matches identifiers: after NFKC normalisation.

Python reads ``µ`` (MICRO SIGN, U+00B5) and ``μ`` (GREEK SMALL LETTER MU, U+03BC) as the same
identifier, because it normalises identifiers with NFKC; :func:`ast.parse` therefore returns
``μ`` for either spelling. Every place that matches a name written by the user (expression
names, TOML keys, formula columns, ``start=`` and ``priors=`` keys) normalises both sides with
:func:`normalize`, so a name is found however it was typed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

from mle_ppl._src.errors import DataError


def normalize(name: str) -> str:
    """The NFKC form of ``name`` (what Python uses as the identifier).

    Examples
    --------
    >>> normalize("\\u00b5") == "\\u03bc"
    True
    >>> normalize("beta")
    'beta'
    """
    return unicodedata.normalize("NFKC", name) if isinstance(name, str) else name


def normalize_keys(mapping: Mapping) -> dict:
    """``mapping`` with NFKC-normalised string keys (later keys win on a collision)."""
    return {normalize(k): v for k, v in mapping.items()}


def collisions(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct names that are the same identifier after normalisation.

    Examples
    --------
    >>> collisions(["\\u00b5", "\\u03bc", "x"])
    [('µ', 'μ')]
    """
    seen: dict[str, str] = {}
    out = []
    for n in names:
        key = normalize(str(n))
        if key in seen and seen[key] != n:
            out.append((seen[key], n))
        seen.setdefault(key, n)
    return out


def find_column(columns: Iterable, name: str, *, where: str,
                identifier: bool = False) -> str | None:
    """The column called ``name``, or ``None`` if there is none.

    A column name given as a string (``[data] y = "µ"``) matches exactly first; a name used as
    an identifier (in a formula, read by Python, ``identifier=True``) matches every column that
    is the same identifier after NFKC normalisation (``µ`` is ``μ``). If no exact match decides,
    the normalised match must be unique.

    Raises
    ------
    DataError
        Two columns are the same identifier and the match is ambiguous.

    Examples
    --------
    >>> find_column(["y", "\u00b5"], "\u03bc", where="key mu") == "\u00b5"
    True
    """
    columns = [str(c) for c in columns]
    if name in columns and not identifier:
        return name
    key = normalize(name)
    hits = [c for c in columns if normalize(c) == key]
    if len(hits) > 1:
        raise DataError(f"{where}: columns {hits} are the same name {key!r} to Python (it "
                        "reads identifiers in NFKC form, e.g. µ as μ); rename one of them.")
    return hits[0] if hits else None
