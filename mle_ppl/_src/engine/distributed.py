"""The Dask backend of the chunked objective: partitions bound and evaluated where they live.

``mle_ppl.fit(model_file, data=ddf)`` with a ``dask.dataframe.DataFrame``:

1. **Levels.** The distinct values of the categorical columns are computed on the cluster (one
   pass over those columns), so every partition is bound with the same levels.
2. **Bind once, keep.** Each partition is bound (checks, codes, design matrix) by a task on the
   worker that holds it and the bound arrays are *persisted* there (``dask.persist``): they stay
   in worker memory for the whole fit. A bad partition (NaN, a missing column, text in a numeric
   column) raises a :class:`~mle_ppl.DataError` naming the partition before the first iteration.
3. **Compile once per worker process and model.** A worker rebuilds the model from the model
   file's parsed content (shipped with each task, a few kB) and keeps it, with its compiled
   likelihood, in a process-wide cache keyed by a hash of that content and of the levels.
4. **Sum on the driver.** Each objective call sends ``x`` to one task per partition, which swaps
   its partition into the cached model and returns its value, gradient or Hessian (or the
   sandwich's meat); the driver adds them and the optimizer (trust-region Newton) takes the step.

Whichever scheduler is active runs the tasks: a ``distributed.Client`` (a LocalCluster, or a
cluster's address) when one exists, else Dask's local default. A lost worker's persisted
partitions are recomputed by Dask from their lineage (read, bind), so the sums, and the fit, are
the same. Dask is imported only here, only when a Dask DataFrame is passed.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mle_ppl._src.engine.chunked import (
    ChunkedObjective,
    chunk_sums,
    head,
    refuse_random_effects,
    resolve_chunk_mode,
)
from mle_ppl._src.engine.likelihood import likelihood_for
from mle_ppl._src.errors import DataError

#: The worker-side cache: content hash -> spec (whose models cache per data structure).
_SPECS: OrderedDict = OrderedDict()
_SPECS_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Recipe:
    """What a task needs to rebuild the model on a worker (sent with every task)."""

    key: str  #: hash of the model file's parsed content and the levels
    blob: bytes  #: the pickled spec, without its cache of built models
    levels: object
    likelihood_only: bool
    mode: str
    n_params: int
    observed_names: tuple[str, ...]


def _spec_blob(spec) -> bytes:
    bare = copy.copy(spec)
    bare._cache = OrderedDict()
    return pickle.dumps(bare)


def _worker_spec(recipe: _Recipe):
    with _SPECS_LOCK:
        spec = _SPECS.get(recipe.key)
        if spec is None:
            spec = pickle.loads(recipe.blob)
            _SPECS[recipe.key] = spec
            while len(_SPECS) > 8:
                _SPECS.popitem(last=False)
        return spec


def _bind_partition(recipe: _Recipe, table: pd.DataFrame, i: int):
    from mle_ppl._src.model.chunks import bind_chunk

    return bind_chunk(_worker_spec(recipe), table, recipe.levels, f"Dask partition {i}")


def _rows(chunk) -> int:
    return chunk.n


def _evaluate(recipe: _Recipe, chunk, what: str, x: np.ndarray, groups=None, fn=None,
              offset: int = 0):
    if chunk.bound is None:
        return None if what in ("call", "head", "rows") else _empty(recipe, what)
    spec = _worker_spec(recipe)
    from mle_ppl._src.engine.chunked import _EVAL_LOCK

    with _EVAL_LOCK:
        model = spec.model_for_bound(chunk.bound)
        lik = likelihood_for(model, likelihood_only=recipe.likelihood_only, mode=recipe.mode)
    return chunk_sums(spec, lik, chunk, what, x, groups=groups, fn=fn, offset=offset)


def _empty(recipe: _Recipe, what: str):
    p = recipe.n_params
    if what == "obs":
        return {k: np.zeros(2) for k in recipe.observed_names}
    return {"n": 0, "f": 0.0, "fg": (0.0, np.zeros(p)), "h": np.zeros((p, p)),
            "fgh": (0.0, np.zeros(p), np.zeros((p, p)), 0),
            "meat": np.zeros((p, p)), "perfect": (0, 0),
            "cluster": (np.zeros(0), np.zeros((0, p)))}[what]


def _distinct(table: pd.DataFrame, columns) -> dict[str, list]:
    return {c: table[c].dropna().unique().tolist() for c in columns}


def _column_values(series: pd.Series):
    return series.to_numpy()


def scheduler_name() -> str:
    """The active scheduler: a distributed Client's address, or Dask's local default."""
    try:
        from distributed import default_client

        return str(default_client().scheduler.address)
    except (ImportError, ValueError):
        import dask

        return f"dask local ({dask.config.get('scheduler', None) or 'threads'})"


class DaskBackend:
    """Partitions persisted on the workers; each map is one task per partition."""

    kind = "dask"

    def __init__(self, ddf, bound, recipe: _Recipe, ns):
        self.ddf = ddf
        self.bound = bound
        self.recipe = recipe
        self.n_rows = int(sum(ns))
        #: global index of each partition's first row (partitions in order, then rows)
        self.offsets = np.concatenate([[0], np.cumsum(ns)[:-1]]).astype(int).tolist()
        self.n_partitions = len(bound)
        self.first = next((i for i, n in enumerate(ns) if n), 0)  #: first partition with rows
        self.description = f"Dask DataFrame of {self.n_partitions} partitions"
        self.notes = ()
        self._groups: dict = {}

    def map(self, what, x, group_column=None, fn=None):
        import dask

        if what == "cluster":
            groups = self._group_values(group_column)
            tasks = [dask.delayed(_evaluate, pure=False)(self.recipe, b, what, x, g)
                     for b, g in zip(self.bound, groups, strict=True)]
        elif what == "rows":
            tasks = [dask.delayed(_evaluate, pure=False)(self.recipe, b, what, x, None, fn, o)
                     for b, o in zip(self.bound, self.offsets, strict=True)]
        elif what == "head":  # the first partition with rows only
            tasks = [dask.delayed(_evaluate, pure=False)(self.recipe, self.bound[self.first],
                                                         what, x, None, fn)]
        else:
            tasks = [dask.delayed(_evaluate, pure=False)(self.recipe, b, what, x, None, fn)
                     for b in self.bound]
        return dask.compute(*tasks)

    def _group_values(self, column):
        import dask

        if column not in self._groups:
            if column not in self.ddf.columns:
                raise DataError(f"groups={column!r} is not a column of the Dask DataFrame; its "
                                f"columns are {list(self.ddf.columns)[:20]}.")
            parts = self.ddf[column].to_delayed()
            self._groups[column] = dask.persist(*[dask.delayed(_column_values)(p)
                                                  for p in parts])
        return self._groups[column]

    def describe(self) -> dict:
        return {"kind": "dask", "partitions": self.n_partitions, "rows": self.n_rows,
                "scheduler": scheduler_name()}


def _kinds(ddf) -> dict[str, str]:
    out = {}
    for c, dt in ddf.dtypes.items():
        out[str(c)] = ("b" if pd.api.types.is_bool_dtype(dt) else
                       "f" if pd.api.types.is_numeric_dtype(dt) else "O")
    return out


def dask_objective(spec, ddf, *, likelihood_only: bool, mode: str) -> ChunkedObjective:
    """The chunked objective over the partitions of ``ddf`` (see the module docstring)."""
    import dask

    from mle_ppl._src.model.chunks import levels_from, model_columns, needs_levels

    cols = model_columns(spec)
    have = [str(c) for c in ddf.columns]
    for c in cols.all:
        if c not in have:
            from mle_ppl._src.errors import did_you_mean

            raise DataError(f"the Dask DataFrame has no column {c!r} (model file {spec._file!r} "
                            f"reads {list(cols.all)}).{did_you_mean(c, have)} Its columns are "
                            f"{have[:20]}.")
    full, ddf = ddf, ddf[list(cols.all)]
    need = needs_levels(cols, _kinds(ddf))
    uniques: dict[str, set] = {c: set() for c in need}
    if need:  # one task per partition (no shuffle), the union on the driver
        for part in dask.compute(*[dask.delayed(_distinct)(p, need)
                                   for p in ddf[list(need)].to_delayed()]):
            for c in need:
                uniques[c].update(part[c])
    levels = levels_from(spec, cols, uniques, where="the Dask DataFrame")
    blob = _spec_blob(spec)
    key = hashlib.sha256(blob + pickle.dumps(levels)).hexdigest()
    with _SPECS_LOCK:  # tasks that run in this process (Dask's local scheduler) share it
        _SPECS[key] = spec
    probe = _Recipe(key, blob, levels, likelihood_only, mode, 0, ())
    parts = ddf.to_delayed()
    bound = dask.persist(*[dask.delayed(_bind_partition)(probe, p, i)
                           for i, p in enumerate(parts)])
    ns = dask.compute(*[dask.delayed(_rows)(b) for b in bound])  # raises for a bad partition
    nonempty = [i for i, n in enumerate(ns) if n]
    if not nonempty:
        raise DataError("the Dask DataFrame has no rows; a fit needs at least one observation.")
    first = dask.compute(dask.delayed(head)(bound[nonempty[0]], 64))[0]
    model = spec.model_for_bound(first.bound)
    refuse_random_effects(model)
    width = sum(int(np.prod(a.shape[1:], dtype=int)) for a in first.bound.arrays.values())
    resolved = resolve_chunk_mode(mode, model, max(ns), max(ns) * width)
    lik = likelihood_for(model, likelihood_only=likelihood_only, mode=resolved)
    recipe = _Recipe(key, blob, levels, likelihood_only, resolved, lik.n_params,
                     lik.observed_names)
    return ChunkedObjective(lik, DaskBackend(full, bound, recipe, ns))
