"""Data in row chunks: which columns a model file reads, their levels, and Parquet read in batches.

A likelihood over data too large for memory (or spread over a cluster) is a sum over row chunks,
each bound to the same ``pm.Model`` with ``pm.set_data``. Two things must then hold for every
chunk, and this module makes them hold:

- **Same structure.** A categorical column (a ``[data]`` entry with levels, or a column inside
  ``C()`` or a text column in a formula) must have the same levels in every chunk, although a
  chunk may lack some. The levels are found in a *first pass* over the data that reads only those
  columns (:func:`first_pass`), or taken from the model file where it declares them; each chunk is
  then bound with them (``bind(..., levels=...)``; formula columns as pandas categoricals).
- **No per-chunk statistics.** Formula transforms whose value depends on the whole column
  (``center()``, ``scale()``, ``poly()``) would be computed per chunk, so they are refused with a
  message (precompute the column).

:class:`ParquetChunks` reads one or many Parquet files (a glob or a directory) in row batches of
at most ``chunk_rows`` rows with pyarrow, only the columns the model uses; each file's schema is
checked first, so a file that lacks a column or holds text where the others hold numbers is
named in a :class:`~mle_ppl.DataError` before any fitting. Numeric data entries are bound from
Arrow into reused arrays (:mod:`.arrow_bind`), and a thread reads the next chunk while the
caller evaluates the current one (:func:`prefetched`).
"""

from __future__ import annotations

import ast
import glob
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mle_ppl._src.errors import DataError, MLEError, did_you_mean

#: Formula functions whose value depends on the whole column (refused for chunked data).
STATEFUL = ("center", "scale", "poly")

#: Memory budget of an in-memory fit from Parquet paths, in bytes: estimated data size (rows x
#: columns read x 8 bytes x :data:`EXPANSION`) above it streams. Set ``MLE_PPL_MEMORY_BUDGET``
#: (bytes, or with a K/M/G suffix) or pass ``memory_budget=`` to ``fit``.
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
#: Working memory of an in-memory fit per byte of data (the table, the bound arrays, the
#: compiled functions' temporaries).
EXPANSION = 4
#: Rows per chunk when streaming was switched on by the memory budget.
DEFAULT_CHUNK_ROWS = 1_000_000
#: Chunks read ahead by the prefetch thread of a streamed pass (``MLE_PPL_PREFETCH``; 0: none).
PREFETCH = 1


def prefetch_depth() -> int:
    """Chunks to read ahead: ``$MLE_PPL_PREFETCH`` (0 turns the thread off), else
    :data:`PREFETCH`."""
    text = os.environ.get("MLE_PPL_PREFETCH", "").strip()
    if not text:
        return PREFETCH
    try:
        depth = int(text)
    except ValueError:
        raise MLEError(f"MLE_PPL_PREFETCH={text!r} is not a whole number of chunks; use 0 "
                       "(no read-ahead), 1 (the default) or more.") from None
    if depth < 0:
        raise MLEError(f"MLE_PPL_PREFETCH={text!r} must be 0 or more.")
    return depth


def memory_budget(value: Any = None) -> int:
    """The memory budget in bytes: ``value``, else ``$MLE_PPL_MEMORY_BUDGET``, else 2 GiB."""
    if value is None:
        value = os.environ.get("MLE_PPL_MEMORY_BUDGET")
        if value is None:
            return DEFAULT_MEMORY_BUDGET
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 < value < 2**63:  # also NaN and inf
            raise MLEError(f"memory_budget must be positive bytes (below 8 EiB); got {value}.")
        return int(value)
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}.get(text[-1:], 1)
    try:
        out = float(text[:-1] if mult > 1 else text) * mult
    except ValueError:
        raise MLEError(f"memory budget {value!r} is not a size; use bytes or e.g. '500M', "
                       "'4G'.") from None
    if not 0 < out < 2**63:  # also NaN and inf ('1e999G')
        raise MLEError(f"memory budget {str(value)[:40]!r} must be a positive size below 8 EiB "
                       "(e.g. '500M', '4G').")
    return int(out)


# ---------------------------------------------------------------- model columns
@dataclass(frozen=True)
class Columns:
    """The columns a model file reads, and those whose levels must be fixed across chunks."""

    numeric: tuple[str, ...]  #: read as numbers
    categorical: tuple[str, ...]  #: ``[data]`` entries with levels (bound to integer codes)
    formula: tuple[str, ...]  #: used in a formula (categorical if text, bool or inside C())
    in_c: tuple[str, ...]  #: formula columns inside ``C()``
    declared: Mapping[str, tuple]  #: data name -> levels declared in the model file

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.numeric + self.categorical + self.formula))


def model_columns(spec) -> Columns:
    """The columns of the data table that ``spec`` (a TOML model file) reads.

    Raises
    ------
    MLEError
        For a Python model file (its ``build(data)`` may compute anything from the whole table)
        or a formula with ``center()``/``scale()``/``poly()``.
    """
    if spec.kind != "toml":
        raise MLEError(f"{spec._file!r} is a Python model file: streamed and Dask fits need a TOML "
                       "model file (a Python build(data) may compute quantities from the whole "
                       "table, which a chunk does not have).")
    from formulaic import Formula

    numeric, categorical, formula, in_c = [], [], [], []
    declared = {}
    for item in spec._items:
        if item.kind == "categorical":
            categorical.append(item.columns[0])
            if item.levels is not None:
                declared[item.name] = tuple(str(v) for v in item.levels)
        elif item.kind == "design":
            for term in Formula(item.formula):
                for factor in term.factors:
                    method = getattr(factor.eval_method, "value", str(factor.eval_method))
                    if method == "lookup":
                        formula.append(factor.expr)
                    elif method == "python":
                        tree = ast.parse(factor.expr, mode="eval")
                        for node in ast.walk(tree):
                            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                                if node.func.id in STATEFUL:
                                    raise MLEError(
                                        f"model file {spec._file!r}, key {item.key}: "
                                        f"{node.func.id}() in a formula is computed from the "
                                        "whole column, which a streamed or Dask fit sees only "
                                        "in chunks; precompute the column (e.g. x_c = x - "
                                        "mean(x)) and use it instead.")
                                if node.func.id == "C":
                                    in_c += [n.id for n in ast.walk(node)
                                             if isinstance(n, ast.Name) and n.id != "C"]
                        formula += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                                    and n.id not in ("C", "I", "log", "log2", "log10", "exp")]
        else:
            numeric.extend(item.columns)
    dedup = lambda xs: tuple(dict.fromkeys(xs))  # noqa: E731
    return Columns(dedup(numeric), dedup(categorical), dedup(formula), dedup(in_c), declared)


def needs_levels(cols: Columns, dtypes: Mapping[str, str]) -> tuple[str, ...]:
    """Columns whose levels are found in the first pass (``dtypes``: column -> kind letter)."""
    out = [c for c in cols.categorical]
    out += [c for c in cols.formula if c in cols.in_c or dtypes.get(c, "f") not in "iuf"]
    return tuple(dict.fromkeys(out))


def _sorted_levels(values) -> tuple:
    vals = list(values)
    try:
        return tuple(sorted(vals))
    except TypeError:  # mixed types: by text
        return tuple(sorted(vals, key=str))


@dataclass(frozen=True)
class Levels:
    """Levels of every categorical column over the whole data (the first pass)."""

    by_column: Mapping[str, tuple]
    by_item: Mapping[str, tuple]  #: ``[data]`` categorical entries: levels as text, for ``bind``
    formula_columns: tuple[str, ...]  #: formula columns to turn into pandas categoricals

    def prepare(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with formula columns as categoricals over all levels (same design columns
        in every chunk, also one that lacks a level)."""
        if not self.formula_columns:
            return table
        table = table.copy(deep=False)
        for c in self.formula_columns:
            if c in table.columns:
                table[c] = pd.Categorical(table[c], categories=list(self.by_column[c]))
        return table


def levels_from(spec, cols: Columns, uniques: Mapping[str, set], *, where: str) -> Levels:
    """:class:`Levels` from the distinct values of each column over the data (first pass)."""
    by_column = {c: _sorted_levels(u) for c, u in uniques.items()}
    by_item = {}
    for item in spec._items:
        if item.kind != "categorical":
            continue
        col = item.columns[0]
        present = tuple(sorted({str(v) for v in uniques.get(col, ())}))
        if item.name in cols.declared:
            lev = cols.declared[item.name]
            unknown = [v for v in present if v not in lev]
            if unknown:
                raise DataError(f"{where}: column {col!r} has value(s) {unknown[:5]} that are not "
                                f"among the declared levels {list(lev)} (key {item.key}). Add "
                                "them to levels or drop those rows.")
            absent = [v for v in lev if v not in present]
            if absent:
                raise DataError(f"{where}: level(s) {absent} of column {col!r} do not occur in "
                                "the data, so their parameters are not identifiable. Remove "
                                f"them from levels (key {item.key}) or add data.")
            by_item[item.name] = lev
        else:
            by_item[item.name] = present
        if item.reference is not None and str(item.reference) not in by_item[item.name]:
            raise DataError(f"{where}: the reference level {item.reference!r} does not occur in "
                            f"column {col!r}; its levels are {list(by_item[item.name])}.")
    formula_cols = tuple(c for c in cols.formula if c in by_column)
    return Levels(by_column, by_item, formula_cols)


@dataclass(frozen=True)
class BoundChunk:
    """One chunk's arrays, ready to be swapped into the model (``spec.model_for_bound``)."""

    label: str
    bound: Any  #: BoundData, or None for a chunk without rows
    n: int


def bind_chunk(spec, table: pd.DataFrame, levels: Levels, label: str) -> BoundChunk:
    """Bind one chunk with the whole data's levels; a DataError names the chunk (file, rows)."""
    if table.shape[0] == 0:
        return BoundChunk(label, None, 0)
    try:
        bound = spec.bind(levels.prepare(table), levels=levels.by_item)
    except DataError as err:
        raise DataError(f"{label}: {err}") from None
    # only the arrays travel (the table is dropped: half the memory of a chunk)
    from dataclasses import replace

    return BoundChunk(label, replace(bound, table=None), bound.n)


# ---------------------------------------------------------------------- Parquet
def is_parquet_source(data: Any) -> bool:
    """True for a path that names Parquet data: a glob, a directory, or a ``.parquet`` file."""
    if not isinstance(data, str | PathLike):
        return False
    s = str(data)
    if any(ch in s for ch in "*?["):
        return True
    p = Path(s)
    return p.is_dir() or p.suffix.lower() in (".parquet", ".pq")


def parquet_files(data: str | PathLike) -> list[Path]:
    """The Parquet files of a glob, a directory (recursively) or one file, sorted by name."""
    s = str(data)
    if any(ch in s for ch in "*?["):
        files = [Path(f) for f in sorted(glob.glob(s, recursive=True)) if Path(f).is_file()]
        if not files:
            raise DataError(f"no files match {s!r}; check the pattern (quote it in a shell).")
    else:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in (".parquet", ".pq"))
            if not files:
                raise DataError(f"directory {s!r} holds no .parquet files.")
        elif p.is_file():
            files = [p]
        else:
            raise DataError(f"data file {s!r} does not exist.")
    bad = [f for f in files if f.suffix.lower() not in (".parquet", ".pq")]
    if bad:
        raise DataError(f"{str(bad[0])!r} is not a Parquet file (.parquet/.pq); streamed data "
                        "must be Parquet (convert CSV with pandas.read_csv(...).to_parquet(...)).")
    return files


def _kind(pa_type) -> str:
    import pyarrow as pa

    if pa.types.is_boolean(pa_type):
        return "b"
    if pa.types.is_integer(pa_type):
        return "i"
    if pa.types.is_floating(pa_type) or pa.types.is_decimal(pa_type):
        return "f"
    if pa.types.is_dictionary(pa_type):
        return _kind(pa_type.value_type)
    if pa.types.is_string(pa_type) or pa.types.is_large_string(pa_type):
        return "O"
    return "?"


_KIND_NAMES = {"b": "boolean", "i": "integer", "f": "floating point", "O": "text", "?": "other"}


class ParquetChunks:
    """Row chunks of Parquet files: schema checks, levels (first pass), then batches.

    Parameters
    ----------
    data : str or path
        A glob (``"big/*.parquet"``), a directory, or one file.
    spec : ModelSpec
        A TOML model file (its columns are read, nothing else).
    chunk_rows : int
        Rows per chunk (pyarrow record batches; the last batch of a file may be shorter).
    extra_columns : tuple of str
        Further columns to read (e.g. a cluster column for robust standard errors).
    """

    def __init__(self, data, spec, chunk_rows: int, extra_columns: tuple[str, ...] = ()):
        import pyarrow.parquet as pq

        if not isinstance(chunk_rows, int | np.integer) or chunk_rows < 1:
            raise MLEError(f"chunk_rows must be a positive integer; got {chunk_rows!r}.")
        self.spec = spec
        self.chunk_rows = int(chunk_rows)
        self.files = parquet_files(data)
        self.description = str(data)
        self.model_cols = model_columns(spec)
        self.columns = tuple(dict.fromkeys(self.model_cols.all + tuple(extra_columns)))
        kinds: dict[str, tuple[str, Path]] = {}
        self.n_rows = 0
        self.rows_per_file = []
        for f in self.files:
            try:
                meta = pq.read_metadata(f)
                schema = pq.read_schema(f)
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read Parquet file {str(f)!r}: "
                                f"{str(err).splitlines()[0]}") from None
            names = list(schema.names)
            for c in self.columns:
                if c not in names:
                    raise DataError(f"Parquet file {str(f)!r} has no column {c!r} (the model "
                                    f"reads {list(self.columns)}).{did_you_mean(c, names)} "
                                    f"Its columns are {names[:20]}.")
                k = _kind(schema.field(c).type)
                if c in kinds and not (k == kinds[c][0] or (k in "if" and kinds[c][0] in "if")):
                    first = kinds[c]
                    raise DataError(
                        f"Parquet file {str(f)!r}: column {c!r} is {_KIND_NAMES[k]} "
                        f"({schema.field(c).type}) but {_KIND_NAMES[first[0]]} in "
                        f"{str(first[1])!r}; every file must hold the same kind of values in a "
                        "column. Fix the file's column type.")
                kinds.setdefault(c, (k, f))
            self.rows_per_file.append(meta.num_rows)
            self.n_rows += meta.num_rows
        self.kinds = {c: k for c, (k, _) in kinds.items()}
        if self.n_rows == 0:
            raise DataError(f"the Parquet data {self.description!r} have no rows; a fit needs at "
                            "least one observation.")
        self.levels = self._first_pass()
        self.n_chunks = sum(-(-r // self.chunk_rows) for r in self.rows_per_file)
        from mle_ppl._src.model.arrow_bind import ArrowBinder

        #: binds numeric entries from Arrow (None: pandas and bind); the first chunk it binds
        #: is checked against bind
        self.depth = prefetch_depth()
        self._binder = ArrowBinder.for_spec(spec, self.kinds, self.chunk_rows, self.depth + 2)
        self._binder_checked = False

    @property
    def data_bytes(self) -> int:
        """Bytes of the columns read, as float64 (the in-memory fit's arrays)."""
        return 8 * self.n_rows * len(self.columns)

    def _first_pass(self) -> Levels:
        """Distinct values of the categorical columns over all files (reads only those)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        need = needs_levels(self.model_cols, self.kinds)
        uniques: dict[str, set] = {c: set() for c in need}
        if need:
            for f in self.files:
                table = pq.read_table(f, columns=list(need))
                for c in need:
                    col = table.column(c)
                    if col.null_count:
                        raise DataError(f"Parquet file {str(f)!r}: column {c!r} has "
                                        f"{col.null_count} missing value(s). Drop those rows or "
                                        "give them a level.")
                    uniques[c].update(pc.unique(col).to_pylist())
                del table
        return levels_from(self.spec, self.model_cols, uniques,
                           where=f"Parquet data {self.description!r}")

    def batches(self) -> Iterator[tuple[str, Any]]:
        """``(label, pyarrow RecordBatch)`` per chunk (only the columns read); the label names
        the file and the rows."""
        import pyarrow.parquet as pq

        for f in self.files:
            start = 0
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=self.chunk_rows, columns=list(self.columns)):
                n = batch.num_rows
                yield f"Parquet file {str(f)!r} rows {start}-{start + n - 1}", batch
                start += n

    def tables(self) -> Iterator[tuple[str, pd.DataFrame]]:
        """``(label, table)`` per chunk, as pandas tables."""
        for label, batch in self.batches():
            yield label, batch.to_pandas()

    def chunks(self, prefetch: bool = True) -> Iterator[BoundChunk]:
        """The bound chunks, one at a time.

        Numeric data entries are bound straight from Arrow into reused arrays
        (:class:`~mle_ppl._src.model.arrow_bind.ArrowBinder`); other model files go through
        pandas and :func:`bind_chunk`. With ``prefetch``, a thread reads and binds the next
        chunk while the caller evaluates this one (pyarrow decodes and NumPy copies without the
        GIL): memory is then read-ahead (:func:`prefetch_depth`) + 2 chunks. A chunk's arrays
        are valid until the caller asks for the next one.
        """
        produce = self._bound_chunks
        if not prefetch or self.depth == 0:
            yield from produce()
            return
        yield from prefetched(produce, self.depth)

    def _bound_chunks(self) -> Iterator[BoundChunk]:
        binder = self._binder
        slot = 0
        for label, batch in self.batches():
            if binder is None or batch.num_rows == 0:
                yield bind_chunk(self.spec, batch.to_pandas(), self.levels, label)
                continue
            bound = binder.bind(batch, slot)
            if bound is None or not self._binder_checked:
                slow = bind_chunk(self.spec, batch.to_pandas(), self.levels, label)
                if bound is not None:  # the first chunk: both ways must agree exactly
                    from mle_ppl._src.model.arrow_bind import same_binding

                    self._binder_checked = True
                    if not same_binding(bound, slow.bound):
                        self._binder = binder = None
                yield slow  # also a batch the binder declined (bind raised or decided)
                continue
            slot = (slot + 1) % binder.slots
            yield BoundChunk(label, bound, bound.n)


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetched(produce, depth: int) -> Iterator:
    """The items of ``produce()``, made by a thread that runs up to ``depth`` items ahead.

    An exception in the thread is raised here, at the item where it occurred; when the caller
    stops early (an exception, ``close()``), the thread is stopped and joined before this
    returns, so no chunk is read after the pass."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in produce():
                if not put(item):
                    return
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            put(_Failed(err))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="mle-ppl-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
