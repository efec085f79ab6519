"""The chunked objective: the compiled likelihood summed over row chunks (streamed or on Dask).

The log-likelihood, its gradient, its Hessian and the scores' outer products are sums over rows,
so an objective over data that do not fit in memory (Parquet read in batches) or that live on a
Dask cluster is the in-memory :class:`~mle_ppl._src.engine.likelihood.Likelihood`, evaluated on
one chunk at a time and summed. Each chunk is swapped into the same ``pm.Model``'s ``pm.Data``
containers (``spec.model_for_bound``), so the compiled functions are built once, for any chunk
length (the last, shorter chunk included), and are exactly the in-memory fit's functions.

:class:`ChunkedObjective` implements the objective protocol (:mod:`.objective`) on a *backend*
that maps one :func:`chunk_sums` call over all chunks:

- :class:`StreamBackend` (this module): chunks read one at a time on this machine
  (:class:`~mle_ppl._src.model.chunks.ParquetChunks`); memory is bounded by one chunk.
- :class:`~mle_ppl._src.engine.distributed.DaskBackend`: partitions bound once on the workers
  that hold them and kept there; only ``x`` goes out and the sums come back.

What needs per-row values of all rows (``pointwise``, ``scores``) raises
:class:`~mle_ppl._src.engine.objective.NotAvailable`; :meth:`ChunkedObjective.meat` gives the
sandwich's middle as a sum instead (also per cluster, when the cluster column is in the data).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from mle_ppl._src.engine.compiled import SMALL_DATA, SMALL_MODE
from mle_ppl._src.engine.objective import NotAvailable
from mle_ppl._src.errors import DataError, MLEError

#: One evaluation at a time per process: chunks are swapped into one shared model.
_EVAL_LOCK = threading.RLock()


def activate(spec, lik, chunk) -> None:
    """Swap ``chunk`` (a BoundChunk with rows) into ``lik``'s model (no recompilation)."""
    model = spec.swap_in(chunk.bound)
    if model is None:
        model = spec.model_for_bound(chunk.bound)
    if model is not lik.model:
        raise DataError(f"{chunk.label}: its data structure (columns, their types or categorical "
                        "levels) differs from the first chunk's; every chunk must have the same "
                        "columns with the same kinds of values.")


def chunk_sums(spec, lik, chunk, what: str, x: np.ndarray, groups=None, fn=None,
               offset: int = 0) -> Any:
    """One chunk's contribution to a sum (see :class:`ChunkedObjective` for ``what``).

    ``what="call"`` returns ``fn(lik, x)`` with the chunk bound into the model (None for a chunk
    without rows), ``what="rows"`` returns ``fn(lik, x, offset)``, ``offset`` the global index of
    the chunk's first row (per-row weights keyed by row, e.g. the Poisson bootstrap's),
    ``what="head"`` ``fn(lik, x)`` on its first :data:`HEAD_ROWS` rows: the hooks
    :meth:`ChunkedObjective.map_chunks` and :meth:`ChunkedObjective.map_head` give upper layers
    (the closed-form checks)."""
    p = lik.n_params
    if chunk.bound is None:  # a chunk without rows adds nothing
        if what in ("call", "head", "rows"):
            return None
        if what == "obs":
            return {k: np.zeros(2) for k in lik.observed_names}
        return {"n": 0, "f": 0.0, "fg": (0.0, np.zeros(p)), "h": np.zeros((p, p)),
                "fgh": (0.0, np.zeros(p), np.zeros((p, p)), 0),
                "meat": np.zeros((p, p)), "perfect": (0, 0),
                "cluster": (np.zeros(0), np.zeros((0, p)))}[what]
    with _EVAL_LOCK:
        activate(spec, lik, head(chunk, HEAD_ROWS) if what == "head" else chunk)
        if what in ("call", "head"):
            return fn(lik, x)
        if what == "rows":
            return fn(lik, x, offset)
        if what == "n":
            return lik.count_obs(x)
        if what == "f":
            return lik.value(x)
        if what == "fg":
            return lik.value_and_grad(x)
        if what == "fgh":  # one pass for Newton's next two calls (and the row count); the
            f, g = lik.value_and_grad(x)  # Hessian reuses the gradient's linear predictors
            return f, g, lik.hessian(x), lik.count_obs(x)
        if what == "h":
            return lik.hessian(x)
        if what == "obs":
            return {k: np.array([np.sum(v, dtype=float), np.sum(np.square(v, dtype=float))])
                    for k, v in lik.current_observed().items()}
        if what == "perfect":
            pw = lik.pointwise(x)
            return (sum(int(np.sum(v > -1e-9)) for v in pw.values()),
                    sum(int(v.size) for v in pw.values()))
        # per-row scores of the whole chunk: forward mode, rows x parameters of memory
        S = lik.scores(x)
    if what == "meat":
        return S.T @ S
    if what == "cluster":
        g = np.asarray(groups)
        if g.shape[0] != S.shape[0]:
            raise MLEError(f"{chunk.label}: the cluster column has {g.shape[0]} values for "
                           f"{S.shape[0]} observations; clusters need one label per row.")
        labels, inv = np.unique(g, return_inverse=True)
        Sg = np.zeros((labels.size, p))
        np.add.at(Sg, inv, S)
        return labels, Sg
    raise ValueError(what)


#: Rows of a chunk that :meth:`ChunkedObjective.map_head` binds (e.g. to detect a structure by
#: a per-row Jacobian, whose compiled graph holds a rows x rows intermediate).
HEAD_ROWS = 256


def head(chunk, k: int):
    """The first ``k`` rows of a bound chunk."""
    from dataclasses import replace

    b = chunk.bound
    if b.n <= k:
        return chunk
    arrays = {name: a[:k] for name, a in b.arrays.items()}
    return replace(chunk, bound=replace(b, arrays=arrays, n=k), n=k)


def _add(total, part, what):
    if what == "fg":
        return (total[0] + part[0], total[1] + part[1])
    if what == "fgh":
        return tuple(t + q for t, q in zip(total, part, strict=True))
    if what == "perfect":
        return (total[0] + part[0], total[1] + part[1])
    if what == "obs":
        return {k: total[k] + part[k] for k in total}
    return total + part


class ChunkedObjective:
    """The objective protocol over row chunks: sums of the in-memory compiled pieces.

    Parameters
    ----------
    lik : Likelihood
        The compiled likelihood of the model (bound to one chunk; its layout, start and
        user-scale mapping do not depend on the data).
    backend : StreamBackend or DaskBackend
        ``backend.map(what, x, group_column=None)`` yields each chunk's :func:`chunk_sums`.
    progress : bool
        Print a line per data pass on stderr (rows/s, elapsed).
    """

    def __init__(self, lik, backend, *, progress: bool = False):
        self.lik = lik
        self.backend = backend
        self.blocks = lik.blocks
        self.labels = lik.labels
        self.n_params = lik.n_params
        self.bounded = lik.bounded
        self.notes = tuple(lik.notes) + tuple(backend.notes)
        self.model = lik.model
        self.observed_names = lik.observed_names
        self.deterministic_names = lik.deterministic_names
        self.progress = progress
        #: per-row values are not held (the bootstrap and LOO check this)
        self.rows_in_memory = False
        self.passes = 0
        self.rows_read = 0
        self.seconds = 0.0
        self._n = None
        self._pending = None  # (x, Hessian) from the last fused pass
        self._fuse_hits = self._fuse_misses = 0

    # -------------------------------------------------------------- the sums
    def _sum(self, what: str, x, **kw):
        t0 = time.perf_counter()
        total = None
        for part in self.backend.map(what, np.asarray(x, dtype=float), **kw):
            total = part if total is None else _add(total, part, what)
        dt = time.perf_counter() - t0
        self.passes += 1
        self.seconds += dt
        self.rows_read += self.backend.n_rows
        if total is None:
            raise DataError("the data have no chunks.")
        return total

    def count_obs(self, x=None) -> int:
        """Number of observations over all chunks (one pass, then cached)."""
        if self._n is None:
            self._n = int(self._sum("n", self.lik.x0() if x is None else x))
            if self._n == 0:
                raise DataError(f"{self.backend.description}: no rows; a fit needs at least one "
                                "observation.")
        return self._n

    def value(self, x) -> float:
        return float(self._sum("f", x))

    def value_and_grad(self, x):
        """Value and gradient; while Newton asks for the Hessian at the points it evaluates,
        the same data pass computes it too (one read of the data instead of two)."""
        x = np.asarray(x, dtype=float)
        if self._fuse_hits + 2 < self._fuse_misses:  # the Hessians went unused (e.g. L-BFGS)
            f, g = self._sum("fg", x)
            return float(f), np.asarray(g, dtype=float)
        if self._pending is not None:
            self._fuse_misses += 1
        f, g, h, n = self._sum("fgh", x)
        if self._n is None:
            self._n = int(n)
        self._pending = (x.copy(), np.asarray(h, dtype=float))
        return float(f), np.asarray(g, dtype=float)

    def hessian(self, x):
        x = np.asarray(x, dtype=float)
        if self._pending is not None and np.array_equal(self._pending[0], x):
            h = self._pending[1]
            self._pending = None
            self._fuse_hits += 1
        else:
            h = np.asarray(self._sum("h", x), dtype=float)
        return 0.5 * (h + h.T)

    def meat(self, x, groups: str | None = None) -> tuple[np.ndarray, int]:
        """``B = Σ s_i s_iᵀ`` over rows, or ``Σ_g (Σ_{i∈g} s_i)(Σ_{i∈g} s_i)ᵀ`` over clusters of
        the column ``groups``; returns ``(B, number of groups or rows)``."""
        x = np.asarray(x, dtype=float)
        if groups is None:
            return np.asarray(self._sum("meat", x)), self.count_obs(x)
        if not isinstance(groups, str):
            raise NotAvailable("for chunked or distributed data, cluster-robust errors take the "
                               "name of a column of the data (groups='firm'), not an array.")
        acc: dict = {}
        for labels, Sg in self.backend.map("cluster", x, group_column=groups):
            for lab, row in zip(labels.tolist(), Sg, strict=True):
                acc[lab] = acc[lab] + row if lab in acc else row.copy()
        if not acc:
            raise DataError("the data have no rows.")
        S = np.array(list(acc.values()))
        return S.T @ S, len(acc)

    @property
    def observed_data(self) -> dict[str, np.ndarray]:
        """A fingerprint of the observed values (sum and sum of squares per observed variable,
        one pass): LRT checks that two fits saw the same outcomes."""
        if getattr(self, "_observed", None) is None:
            self._observed = self._sum("obs", self.lik.x0())
        return self._observed

    def map_chunks(self, fn: Callable, x) -> list:
        """``fn(lik, x)`` on every chunk, bound into the model (one data pass).

        ``fn`` must pickle (a module-level function, or an instance of a module-level class:
        Dask sends it to the workers) and return a small summary (e.g. an R factor); the list
        of the non-empty chunks' summaries comes back."""
        t0 = time.perf_counter()
        parts = list(self.backend.map("call", np.asarray(x, dtype=float), fn=fn))
        self.passes += 1
        self.seconds += time.perf_counter() - t0
        self.rows_read += self.backend.n_rows
        return [part for part in parts if part is not None]

    def map_rows(self, fn: Callable, x) -> list:
        """``fn(lik, x, offset)`` on every chunk with rows, ``offset`` the global index of its
        first row (rows numbered in the data's order: files, then rows; or partitions, then
        rows), so per-row quantities keyed by row do not depend on the chunking. One data pass;
        ``fn`` must pickle (as for :meth:`map_chunks`)."""
        t0 = time.perf_counter()
        parts = list(self.backend.map("rows", np.asarray(x, dtype=float), fn=fn))
        self.passes += 1
        self.seconds += time.perf_counter() - t0
        self.rows_read += self.backend.n_rows
        return [part for part in parts if part is not None]

    def map_head(self, fn: Callable, x):
        """``fn(lik, x)`` on the first :data:`HEAD_ROWS` rows of the first chunk with rows."""
        for part in self.backend.map("head", np.asarray(x, dtype=float), fn=fn):
            if part is not None:
                return part
        raise DataError("the data have no rows.")

    def perfect_counts(self, x) -> tuple[int, int]:
        """(observations fitted with probability 1, all observations): the separation check."""
        return self._sum("perfect", x)

    # ------------------------------------------------- per row: not available
    def pointwise(self, x):
        raise NotAvailable(
            f"per-observation log-likelihood terms of {self.backend.kind} data are not kept "
            f"({self.backend.description}); LOO, pointwise cross-entropy and the DataTree's "
            "log_likelihood need them in memory. Fit a sample that fits in memory for those.")

    def scores(self, x):
        raise NotAvailable(
            f"per-row scores of {self.backend.kind} data are not kept; the sandwich uses their "
            "sums (meat); a nonparametric bootstrap, which resamples rows, is not available "
            "for them, but a Poisson bootstrap (kind='poisson') is.")

    # ---------------------------------------------- layout: the in-memory one
    @property
    def discrete_outcome(self) -> bool:
        return self.lik.discrete_outcome

    def x0(self):
        return self.lik.x0()

    def constrained_and_jacobian(self, x):
        return self.lik.constrained_and_jacobian(x)

    def constrained(self, x):
        return self.lik.constrained(x)

    def constrained_flat(self, x):
        return self.lik.constrained_flat(x)

    def constrained_jacobian(self, x):
        return self.lik.constrained_jacobian(x)

    def unconstrain(self, values):
        return self.lik.unconstrain(values)

    def snapshot(self) -> tuple:
        """Nothing to re-bind: every evaluation binds its chunks itself."""
        return ()

    @property
    def data_source(self) -> dict:
        """How the data were read (the JSON's ``data_source``)."""
        return self.backend.describe()

    def report(self, it: int, f: float, gnorm: float) -> str:
        """A progress line: iteration, NLL, rows/s over the passes so far, elapsed time."""
        rate = self.rows_read / self.seconds if self.seconds > 0 else float("nan")
        return (f"iter {it}: NLL {f:.10g}, |grad| {gnorm:.2e}, {self.passes} data passes, "
                f"{rate:,.0f} rows/s, {self.seconds:.1f} s")


class StreamBackend:
    """Chunks read and bound one at a time on this machine (memory: one chunk)."""

    kind = "streamed"

    def __init__(self, source, spec, lik):
        self.source = source
        self.spec = spec
        self.lik = lik
        self.description = f"Parquet data {source.description!r}"
        self.n_rows = source.n_rows
        self.n_chunks = None
        self.notes = ()
        self._group_sources: dict[str, Any] = {}

    def map(self, what, x, group_column=None, fn=None) -> Iterable:
        if what == "cluster":
            yield from self._map_cluster(x, group_column)
            return
        count = 0
        if what == "head":  # the first chunk with rows only (no read-ahead)
            for chunk in self.source.chunks(prefetch=False):
                if chunk.bound is not None:
                    yield chunk_sums(self.spec, self.lik, chunk, what, x, fn=fn)
                    return
            return
        offset = 0
        for chunk in self.source.chunks():
            count += 1
            yield chunk_sums(self.spec, self.lik, chunk, what, x, fn=fn, offset=offset)
            offset += chunk.n
        self.n_chunks = count

    def _map_cluster(self, x, column):
        from mle_ppl._src.model.chunks import ParquetChunks, bind_chunk

        src = self._group_sources.get(column)
        if src is None:
            src = ParquetChunks(self.source.description, self.spec, self.source.chunk_rows,
                                extra_columns=(column,))
            self._group_sources[column] = src
        for label, table in src.tables():
            chunk = bind_chunk(self.spec, table, src.levels, label)
            yield chunk_sums(self.spec, self.lik, chunk, "cluster", x,
                             groups=table[column].to_numpy())

    def describe(self) -> dict:
        return {"kind": "streamed", "source": self.source.description,
                "files": len(self.source.files), "rows": int(self.n_rows),
                "chunk_rows": self.source.chunk_rows,
                "chunks": self.n_chunks if self.n_chunks is not None else self.source.n_chunks}


def refuse_random_effects(model) -> None:
    """Chunked data: the Laplace-marginal objective (random effects) is not summed by chunks."""
    from mle_ppl._src.engine.random_effects import classify

    roles = classify(model)
    if roles.random:
        names = ", ".join(roles.random)
        raise NotAvailable(f"the model has random effects ({names}): their Laplace-marginal "
                           "likelihood is not evaluated on streamed or Dask data (a group's rows "
                           "may span chunks). Fit it in memory.")


def resolve_chunk_mode(mode: str, lik_model, rows: int, elements: int) -> str:
    """``"auto"``: the Python-VM mode only when a whole chunk is small (as in memory)."""
    if mode != "auto":
        return mode
    return SMALL_MODE if elements <= SMALL_DATA else "FAST_RUN"


def streamed_objective(spec, data, *, chunk_rows: int, likelihood_only: bool, mode: str,
                       progress: bool = False, reason: str | None = None) -> ChunkedObjective:
    """The chunked objective over Parquet ``data`` read ``chunk_rows`` rows at a time."""
    from mle_ppl._src.engine.likelihood import likelihood_for  # PyMC: only when streaming
    from mle_ppl._src.model.chunks import ParquetChunks

    source = ParquetChunks(data, spec, chunk_rows)
    first = next((c for c in source.chunks() if c.bound is not None), None)
    if first is None:
        raise DataError(f"the Parquet data {str(data)!r} have no rows.")
    model = spec.model_for_bound(first.bound)
    refuse_random_effects(model)
    elements = sum(int(np.size(a)) for a in first.bound.arrays.values())
    lik = likelihood_for(model, likelihood_only=likelihood_only,
                         mode=resolve_chunk_mode(mode, model, first.n, elements))
    backend = StreamBackend(source, spec, lik)
    if reason:
        backend.notes = (reason,)
    return ChunkedObjective(lik, backend, progress=progress)


def progress_printer(objective) -> Callable | None:
    """A progress callback printing one line per iteration on stderr (chunked objectives)."""
    if not hasattr(objective, "report"):
        return None

    def cb(it, f, gnorm):
        print(objective.report(it, f, gnorm), file=sys.stderr, flush=True)
    return cb


def is_dask_dataframe(data: Any) -> bool:
    """True for a ``dask.dataframe.DataFrame`` (without importing Dask)."""
    return type(data).__module__.startswith("dask") and hasattr(data, "to_delayed")


@dataclass(frozen=True)
class Plan:
    """How ``fit`` reads its data: ``kind`` is ``"memory"``, ``"streamed"`` or ``"dask"``."""

    kind: str
    spec: Any
    data: Any
    chunk_rows: int | None = None
    reason: str | None = None
    files: int = 0


def plan(model, data, *, chunk_rows, memory_budget) -> Plan | None:
    """How ``fit`` reads ``data``: ``None`` (as given, in memory) or a :class:`Plan`.

    Parquet paths stream when ``chunk_rows`` is given, or when their estimated in-memory size
    (rows x columns read x 8 bytes x :data:`~mle_ppl._src.model.chunks.EXPANSION`) exceeds the
    memory budget (:func:`~mle_ppl._src.model.chunks.memory_budget`); a glob or directory under
    the budget is read into one table (only the columns the model reads).
    """
    from mle_ppl._src.model import chunks

    dask_df = is_dask_dataframe(data)
    parquet = chunks.is_parquet_source(data)
    if not (dask_df or parquet or chunk_rows is not None):
        return None
    if chunk_rows is not None and not parquet:
        raise MLEError("chunk_rows= streams Parquet data (a path, glob or directory); for a "
                       f"{type(data).__name__} leave it out"
                       + (" (Dask partitions are the chunks)." if dask_df else "."))
    if not dask_df and chunk_rows is None and not any(ch in str(data) for ch in "*?[") \
            and not Path(str(data)).is_dir() and not Path(str(data)).is_file():
        return None  # a missing file: the in-memory reader says so
    spec = _spec_of(model)
    if spec is None or (spec.kind != "toml" and not dask_df and chunk_rows is None):
        return None
    cols = chunks.model_columns(spec).all
    if dask_df:
        return Plan("dask", spec, data)
    files = chunks.parquet_files(data)
    if chunk_rows is not None:
        return Plan("streamed", spec, data, int(chunk_rows), files=len(files))
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(f).num_rows for f in files)
    need = 8 * rows * len(cols) * chunks.EXPANSION
    budget = chunks.memory_budget(memory_budget)
    if need > budget:
        reason = (f"the data ({rows:,} rows; ~{need / 2**30:.2f} GiB to fit in memory) exceed "
                  f"the memory budget of {budget / 2**30:.2f} GiB, so they were streamed in "
                  f"chunks of {chunks.DEFAULT_CHUNK_ROWS:,} rows (set memory_budget= or "
                  "MLE_PPL_MEMORY_BUDGET to change the budget, chunk_rows= to choose).")
        return Plan("streamed", spec, data, chunks.DEFAULT_CHUNK_ROWS, reason, len(files))
    if len(files) == 1 and files[0] == Path(str(data)):
        return Plan("memory", spec, data, files=1)
    import pandas as pd

    table = pd.concat([pd.read_parquet(f, columns=list(cols)) for f in files],
                      ignore_index=True)
    return Plan("memory", spec, table, files=len(files))


def _spec_of(model):
    import pymc as pm

    if isinstance(model, pm.Model):
        raise MLEError("a pm.Model holds its data; streamed (Parquet paths) and Dask data need a "
                       "TOML model file that names the columns.")
    if isinstance(model, str | PathLike):
        from mle_ppl._src.model.library import load_model

        model = load_model(model)
    return model if hasattr(model, "model_for") else None
