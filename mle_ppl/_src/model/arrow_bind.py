"""Arrow record batches bound straight to a model file's arrays (numeric data entries, no pandas).

A streamed fit reads every row chunk once per data pass, so binding a chunk must cost little
next to evaluating it. :func:`~mle_ppl._src.model.data.bind` goes through a pandas table and
checks column by column, allocating fresh arrays (page faults on every chunk). For a model file
whose ``[data]`` entries are all numeric vectors and matrices (``y = "y"``, ``x = ["x1", "x2"]``),
:class:`ArrowBinder` instead copies each entry's columns from the Arrow batch into preallocated
arrays that are reused chunk after chunk (float64, or int64 for the outcome of a discrete
distribution; C-contiguous, as ``bind`` makes them), and runs bind's checks as whole-array tests
(no missing values, finite, whole numbers for counts, positive exposures).

A batch that fails a test is bound again by ``bind`` itself, whose DataError names the column and
the rows; a binder's first chunk is bound both ways and must agree exactly (arrays, dtypes and
the structure key), or the binder is not used. So the fast path can never bind differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mle_ppl._src.model.data import BoundData


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  #: "vector" or "matrix"
    columns: tuple[str, ...]
    integer: bool
    positive: bool

    @property
    def dtype(self):
        return np.int64 if self.integer else np.float64


class ArrowBinder:
    """Binds Arrow batches of at most ``chunk_rows`` rows into ``slots`` sets of reused arrays.

    ``bind(batch, slot)`` returns a :class:`~mle_ppl._src.model.data.BoundData` whose arrays are
    views of slot ``slot``'s buffers (valid until that slot is bound again), or ``None`` when a
    check fails (the caller then binds the batch with ``bind`` for the error message).
    """

    def __init__(self, entries: tuple[_Entry, ...], chunk_rows: int, slots: int):
        self.entries = entries
        self.chunk_rows = chunk_rows
        self.slots = slots
        self._buffers: list[dict[str, np.ndarray] | None] = [None] * slots
        self._staging: dict[str, np.ndarray] = {}  #: column-major, one set (one binding thread)
        self.structure = tuple((e.name, e.kind, e.columns, np.dtype(e.dtype).kind)
                               for e in entries)
        self.coords = {}

    @classmethod
    def for_spec(cls, spec, kinds: dict[str, str], chunk_rows: int,
                 slots: int) -> ArrowBinder | None:
        """The binder of ``spec``'s data entries, or None unless all are numeric vectors or
        matrices of numeric columns (``kinds``: column -> kind letter of the files' schema)."""
        entries = []
        coords = {}
        for item in spec._items:
            if item.kind not in ("vector", "matrix"):
                return None
            if any(kinds.get(c, "?") not in "ifb" for c in item.columns):
                return None  # text: bind's message; other types: bind decides
            entries.append(_Entry(item.name, item.kind, tuple(item.columns), bool(item.integer),
                                  bool(item.positive)))
            if item.kind == "matrix":
                coords[item.dim] = tuple(item.columns)
        if not entries:
            return None
        out = cls(tuple(entries), int(chunk_rows), int(slots))
        out.coords = coords
        return out

    def _slot(self, slot: int) -> dict[str, np.ndarray]:
        buf = self._buffers[slot]
        if buf is None:
            buf = {}
            for e in self.entries:
                shape = ((self.chunk_rows,) if e.kind == "vector"
                         else (self.chunk_rows, len(e.columns)))
                buf[e.name] = np.empty(shape, dtype=e.dtype)
            self._buffers[slot] = buf
        return buf

    def _stage(self, e: _Entry) -> np.ndarray:
        buf = self._staging.get(e.name)
        if buf is None:
            buf = np.empty((self.chunk_rows, len(e.columns)), dtype=e.dtype, order="F")
            self._staging[e.name] = buf
        return buf

    def bind(self, batch, slot: int) -> BoundData | None:
        """``batch`` (a pyarrow RecordBatch holding the entries' columns) bound into ``slot``."""
        m = batch.num_rows
        if m == 0 or m > self.chunk_rows:
            return None
        names = batch.schema.names
        buf = self._slot(slot)
        arrays = {}
        for e in self.entries:
            out = buf[e.name][:m]
            # a matrix's columns go into a column-major staging array first (contiguous
            # copies), then into the row-major slot in one pass: writing each column straight
            # into the row-major array strides over it once per column (~4x slower)
            stage = out if e.kind == "vector" else self._stage(e)[:m]
            for j, c in enumerate(e.columns):
                col = batch.column(names.index(c))
                if col.null_count:
                    return None
                values = col.to_numpy(zero_copy_only=False)
                if values.dtype.kind == "f":
                    if not np.isfinite(values).all():
                        return None
                    if e.integer and not np.array_equal(values, np.round(values)):
                        return None
                elif values.dtype.kind not in "iub":
                    return None
                if e.kind == "vector":
                    out[:] = values
                else:
                    stage[:, j] = values
            if e.kind == "matrix":
                np.copyto(out, stage)
            if e.positive and not (out > 0).all():
                return None
            arrays[e.name] = out
        return BoundData(table=None, arrays=arrays, coords=dict(self.coords), levels={},
                         structure=self.structure, n=m)


def same_binding(a: BoundData, b: BoundData) -> bool:
    """True when two bindings of the same rows agree exactly (structure, dtypes, values)."""
    if a.structure != b.structure or a.n != b.n or set(a.arrays) != set(b.arrays):
        return False
    if dict(a.coords) != dict(b.coords):
        return False
    for k, v in a.arrays.items():
        w = b.arrays[k]
        if v.dtype != w.dtype or v.shape != w.shape or not np.array_equal(v, w):
            return False
    return True
