"""Binding a data table (CSV, Parquet, DataFrame, mapping of arrays) to a model file's names.

Every check happens before any PyMC object is built, so nothing is fitted on half-bound data.
Each error names the model file, the key (``data.x``), the column, and suggests a near name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mle_ppl._src.errors import DataError, did_you_mean, rows_text
from mle_ppl._src.model.names import find_column

#: Data file formats read by :func:`read_table`, by suffix.
READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class DataItem:
    """One name of the ``[data]`` table (or of a formula) and how it maps to columns.

    ``kind`` is ``"vector"`` (one numeric column), ``"matrix"`` (several columns; its dim is
    ``dim`` with the column names as coordinates), ``"categorical"`` (labels → integer codes;
    the dim ``dim`` has the levels, without the reference level if one is set) or ``"design"``
    (a formula's right-hand side, built by formulaic). ``integer``: the outcome of a discrete
    distribution (bound as integers); ``positive``: every value must be > 0 (an exposure, whose
    log is the offset).
    """

    name: str
    key: str  #: key path in the model file, e.g. ``data.x``
    kind: str
    columns: tuple[str, ...] = ()
    levels: tuple[Any, ...] | None = None
    reference: Any = None
    dim: str | None = None
    formula: str | None = None
    used_in: tuple[str, ...] = field(default=(), compare=False)
    integer: bool = False
    positive: bool = False
    grouping: bool = False  #: categorical: the groups of a random effect (>= 2 levels)
    nested_in: str | None = None  #: categorical: its levels must be nested in this column


@dataclass(frozen=True)
class BoundData:
    """Arrays per data name, coordinates per dim, and the structure key used for caching."""

    table: pd.DataFrame
    arrays: dict[str, np.ndarray]
    coords: dict[str, tuple]
    levels: dict[str, tuple]  #: all levels of each categorical item (reference included)
    structure: tuple
    n: int


def suggest(name: str, candidates) -> str:
    """``" Did you mean 'x'?"``: a case-insensitive match first, then the closest spelling."""
    cands = [str(c) for c in candidates]
    folded = [c for c in cands if c.lower() == str(name).lower() and c != name]
    if folded:
        return f" Did you mean {folded[0]!r}?"
    return did_you_mean(name, cands)


def _where(file: str | None, key: str | None = None) -> str:
    parts = []
    if file:
        parts.append(f"model file {file!r}")
    if key:
        parts.append(f"key {key}")
    return ", ".join(parts)


def read_table(data: Any, *, file: str | None = None) -> pd.DataFrame:
    """Read ``data`` (DataFrame, mapping of 1-D arrays, or CSV/Parquet path) into a DataFrame.

    Examples
    --------
    >>> read_table({"y": [1.0, 2.0], "x": [0.5, 0.7]}).shape
    (2, 2)
    """
    if isinstance(data, pd.DataFrame):
        table = data
    elif isinstance(data, str | PathLike):
        table = _read_path(Path(data))
    elif isinstance(data, Mapping):
        cols = {}
        for k, v in data.items():
            arr = np.asarray(v)
            if arr.ndim != 1:
                raise DataError(
                    f"data[{k!r}] has shape {arr.shape}; a mapping of data must hold 1-D columns "
                    "(one value per observation). Split a matrix into named columns, e.g. "
                    "{'x1': X[:, 0], 'x2': X[:, 1]}.")
            if str(k) in cols:
                raise DataError(f"the data mapping has the column {str(k)!r} twice (two keys "
                                "that read the same as text); rename one.")
            cols[str(k)] = arr
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the columns of the data mapping have different lengths {lengths}; "
                            "every column needs one value per observation.")
        table = pd.DataFrame(cols)
    else:
        raise DataError(f"data must be a pandas DataFrame, a mapping of 1-D arrays, or a CSV/"
                        f"Parquet path; got {type(data).__name__}.")
    if table.shape[0] == 0:
        raise DataError(f"the data table is empty (0 rows){' for ' + _where(file) if file else ''};"
                        " a fit needs at least one observation.")
    _check_unique_columns([str(c) for c in table.columns], "the data table")
    return table


def _check_unique_columns(names: list[str], what: str) -> None:
    """A column named twice is ambiguous (pandas would silently rename the second ``x1.1``)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"{what} has the column {name!r} twice (columns {seen[name] + 1} and "
                            f"{i + 1}); which one to use is ambiguous. Rename or drop one of "
                            "them.")
        seen[name] = i


def _read_path(path: Path) -> pd.DataFrame:
    fmt = READERS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot read data file {str(path)!r}: unknown format {path.suffix!r}; "
                        f"expected one of {sorted(READERS)} (CSV or Parquet).")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist"
                        + (" (it is a directory)." if path.is_dir() else "."))
    what = f"data file {str(path)!r}"
    try:
        if fmt == "csv":
            # the header as written: read_csv renames a repeated name x1 to x1.1
            header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
            _check_unique_columns([str(v) for v in header.iloc[0].tolist()], what)
            return pd.read_csv(path)
        import pyarrow.parquet as pq

        _check_unique_columns(list(pq.read_schema(path).names), what)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {str(path)!r} is empty.") from None
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, OverflowError,
            RecursionError, MemoryError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read data file {str(path)!r} as {fmt}: {msg}") from None


def _column(table: pd.DataFrame, col: str, item: DataItem, file: str | None) -> pd.Series:
    found = find_column(table.columns, col, where=_where(file, item.key))
    if found is not None:
        col = found
    if col not in table.columns:
        cols = [str(c) for c in table.columns]
        used = f" (used in {', '.join(item.used_in)})" if item.used_in else ""
        raise DataError(
            f"{_where(file, item.key)}{used}: column {col!r} is not in the data table."
            f"{suggest(col, cols)} "
            f"Columns are {cols[:20]}{' ...' if len(cols) > 20 else ''}.")
    return table[col]


def _bad_rows(mask: np.ndarray) -> str:
    """``"[3] (0-based; 4 counting from 1)"``: the first bad rows, for messages."""
    return rows_text(np.flatnonzero(mask)).removeprefix("row(s) ")


def _numeric(series: pd.Series, col: str, item: DataItem, file: str | None,
             integer: bool) -> np.ndarray:
    where = _where(file, item.key)
    if series.dtype == bool:
        values = series.to_numpy().astype(np.int64)
    elif pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy()
        if values.dtype.kind == "c":
            raise DataError(f"{where}: column {col!r} holds complex numbers; expected real "
                            "numbers.")
        values = values.astype(np.float64)
    else:
        sample = series.dropna().astype(str).unique()[:3].tolist()
        raise DataError(
            f"{where}: column {col!r} is not numeric (dtype {series.dtype}, values like "
            f"{sample}). Declare it as categorical, e.g. {item.name} = {{ column = {col!r}, "
            f"levels = [...] }}, or convert it to numbers.")
    bad = ~np.isfinite(values.astype(np.float64))
    if bad.any():
        kind = "missing (NaN)" if np.isnan(values.astype(np.float64)[bad]).any() else "infinite"
        raise DataError(f"{where}: column {col!r} has {int(bad.sum())} {kind} value(s), first "
                        f"at row(s) {_bad_rows(bad)}. Drop or impute those rows before fitting.")
    if integer:
        if not np.all(values == np.round(values)):
            raise DataError(f"{where}: column {col!r} is the outcome of a discrete distribution "
                            f"but has non-integer values at row(s) "
                            f"{_bad_rows(values != np.round(values))}; expected counts or codes.")
        return values.astype(np.int64)
    return values.astype(np.float64)


def _labels(table: pd.DataFrame, item: DataItem, file: str | None) -> np.ndarray:
    """String labels of a categorical item: one column, or the interaction ``a:b`` of several."""
    where = _where(file, item.key)
    role = " (the grouping column of a random effect)" if item.grouping else ""
    parts = []
    for col in item.columns:
        series = _column(table, col, item, file)
        missing = series.isna().to_numpy()
        if missing.any():
            raise DataError(f"{where}: column {col!r}{role} has {int(missing.sum())} missing "
                            f"value(s), first at row(s) {_bad_rows(missing)}. Drop those rows "
                            "or give them a level.")
        parts.append(series.astype(str).to_numpy())
    labels = parts[0]
    for p in parts[1:]:
        labels = np.char.add(np.char.add(labels.astype(str), ":"), p)
    return labels.astype(str).astype(object)  # Python str labels (coords, messages)


def _categorical(labels: np.ndarray, item: DataItem, file: str | None, fixed=None):
    where = _where(file, item.key)
    col = ":".join(item.columns)
    present = list(dict.fromkeys(sorted(labels)))
    if fixed is not None:  # the whole data's levels (chunks): a chunk may lack some
        levels = tuple(fixed)
        unknown = [v for v in present if v not in levels]
        if unknown:
            raise DataError(f"{where}: column {col!r} has value(s) {unknown[:5]} that the first "
                            f"pass over the data did not see (levels {list(levels)}).")
    elif item.levels is not None:
        levels = tuple(str(v) for v in item.levels)
        unknown = [v for v in present if v not in levels]
        if unknown:
            rows = _bad_rows(~np.isin(labels, levels))
            raise DataError(f"{where}: column {col!r} has value(s) {unknown[:5]} at row(s) {rows} "
                            f"that are not among the declared levels {list(levels)}. Add them to "
                            "levels or drop those rows.")
        absent = [v for v in levels if v not in present]
        if absent:
            raise DataError(f"{where}: level(s) {absent} of column {col!r} do not occur in the "
                            "data, so their parameters are not identifiable. Remove them from "
                            "levels or add data.")
    else:
        levels = tuple(present)
    if item.grouping and len(levels) < 2:
        raise DataError(f"{where}: the grouping column {col!r} of a random effect has one level "
                        f"({levels[0]!r}); a variance between groups needs at least two groups "
                        "(and is poorly determined with fewer than about five). Drop the random "
                        "effect or use a column with several groups.")
    if item.reference is not None and str(item.reference) not in levels:
        raise DataError(f"{where}: the reference level {item.reference!r} does not occur in column "
                        f"{col!r}; its levels are {list(levels)}."
                        f"{suggest(str(item.reference), levels)}")
    lookup = {v: i for i, v in enumerate(levels)}
    codes = np.fromiter((lookup[v] for v in labels), dtype=np.int64, count=len(labels))
    coord = tuple(v for v in levels if item.reference is None or v != str(item.reference))
    return codes, levels, coord


def _check_nested(table: pd.DataFrame, labels: np.ndarray, item: DataItem,
                  file: str | None) -> None:
    """Each level of ``item`` must lie inside one level of ``item.nested_in``."""
    parent_col = item.nested_in
    parent = _column(table, parent_col, item, file)
    if parent.isna().any():
        rows = _bad_rows(parent.isna().to_numpy())
        raise DataError(f"{_where(file, item.key)}: column {parent_col!r} (nested_in) has missing "
                        f"values at row(s) {rows}.")
    pairs = pd.DataFrame({"child": labels, "parent": parent.astype(str).to_numpy()})
    n_parents = pairs.drop_duplicates().groupby("child")["parent"].agg(list)
    shared = n_parents[n_parents.map(len) > 1]
    if len(shared):
        lev, parents = shared.index[0], shared.iloc[0]
        col = item.columns[0]
        raise DataError(
            f"{_where(file, item.key)}: column {col!r} is declared nested_in {parent_col!r}, but "
            f"its level {lev!r} occurs in {len(parents)} levels of {parent_col!r} "
            f"({parents[:4]}); {len(shared)} level(s) of {col!r} are shared like this. Nested "
            f"groups need labels unique across {parent_col!r}: relabel them, or use the formula "
            f"term (1 | {parent_col}/{col}), which groups by the interaction "
            f"{parent_col}:{col} as lme4 does.")


def bind(items: list[DataItem], data: Any, *, file: str | None = None,
         fixed_levels: dict[str, tuple] | None = None) -> BoundData:
    """Bind ``data`` to the data items of a model; all checks happen here, before any model.

    Parameters
    ----------
    items : list of DataItem
    data : DataFrame, mapping or path
    file : str, optional
        Model file name for messages.
    fixed_levels : dict, optional
        Levels of categorical entries by name, from the whole data when ``data`` is one chunk of
        it (:mod:`~mle_ppl._src.model.chunks`): used as given, and the chunk may lack some.

    Raises
    ------
    DataError
        Missing columns, non-numeric values, NaN/inf, non-integer counts, non-positive
        exposures, empty table, unknown or absent levels.
    """
    table = read_table(data, file=file)
    arrays: dict[str, np.ndarray] = {}
    coords: dict[str, tuple] = {}
    levels: dict[str, tuple] = {}
    structure = []
    for item in items:
        if item.kind == "design":
            from mle_ppl._src.model.formula import design_matrix

            arr, names = design_matrix(item.formula, table, file=file, key=item.key)
            arrays[item.name] = arr
            coords[item.dim] = tuple(names)
            structure.append((item.name, "design", tuple(names)))
            continue
        if item.kind == "categorical":
            labels = _labels(table, item, file)
            if item.nested_in is not None:
                _check_nested(table, labels, item, file)
            codes, lev, coord = _categorical(labels, item, file,
                                             (fixed_levels or {}).get(item.name))
            arrays[item.name] = codes
            coords[item.dim] = coord
            levels[item.name] = lev
            structure.append((item.name, "categorical", lev, coord))
            continue
        cols = [_numeric(_column(table, c, item, file), c, item, file, integer=item.integer)
                for c in item.columns]
        if item.positive:
            for c, values in zip(item.columns, cols, strict=True):
                bad = values <= 0
                if bad.any():
                    raise DataError(f"{_where(file, item.key)}: column {c!r} must be positive "
                                    f"(log {item.name} is the offset); rows "
                                    f"{_bad_rows(bad)} are not.")
        if item.kind == "vector":
            arrays[item.name] = cols[0]
        else:
            arrays[item.name] = np.column_stack(cols)
            coords[item.dim] = tuple(item.columns)
        structure.append((item.name, item.kind, item.columns, arrays[item.name].dtype.kind))
    return BoundData(table=table, arrays=arrays, coords=coords, levels=levels,
                     structure=tuple(structure), n=int(table.shape[0]))
