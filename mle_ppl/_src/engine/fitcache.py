"""A fit without PyMC: a model file's compiled objective on disk, keyed by file and data schema.

``mle-ppl fit model.toml`` in a new process used to import PyMC (~0.9 s), build the ``pm.Model``
and its log-likelihood graph, and derive each compiled function's key from that graph before the
on-disk function cache (:mod:`~mle_ppl._src.engine.diskcache`) could answer. For a TOML model file
everything the optimizer needs is determined by the file, the *schema* of the data and the
options, so this cache keys on those instead:

Keys
    *Spec entry*: SHA-256 of the model file's resolved path and bytes, the library versions and a
    hash of mle-ppl's own source. It holds what the data binding needs (name, description, data
    items, default data file). *Fit entry*: the spec key plus the bound data's structure (data
    names, kinds, columns, categorical levels, design-matrix columns, dtypes, trailing shapes),
    the number of rows, ``likelihood_only``, ``mode``, ``random`` and ``$PYTENSOR_FLAGS``. It
    holds the compiled functions the fit used, the parameter layout (blocks, labels, transforms,
    bounds, start), the notes, and recipes that map each function's data inputs, the observation
    count and the coordinates to the bound data. Any change of an input gives another key.
Hit
    The file is read and hashed, the data are bound exactly as in a normal fit (every check of
    :func:`~mle_ppl._src.model.data.bind`), and the fit runs on a :class:`CachedLikelihood`: a
    :class:`~mle_ppl._src.engine.likelihood.Likelihood` whose compiled functions come from the
    entry and whose data are the bound arrays. ``import pymc`` is never executed. The one PyMC
    class a compiled log-likelihood holds, ``CheckParameterValue`` (and its exception), is read as
    a stand-in with the same behaviour (:func:`standins`) while PyMC is not loaded; an entry that
    would need any other PyMC object is never written. Anything beyond the entry (profiles,
    sandwich scores, the closed-form check, the DataTree, ``fit.likelihood.model``) builds the
    ``pm.Model`` on first use, from the file and the same bound data, and takes its functions from
    the function cache.
Miss
    The normal path runs (and fills the function cache); afterwards the entry is written if the
    objective was the plain in-memory likelihood and every recipe reproduces the model's own
    values exactly (data inputs, observation count, coordinates); otherwise nothing is written.
When
    Only when PyMC is not imported yet (a new process): where it is, the in-memory caches of
    :class:`~mle_ppl.ModelSpec` and :func:`~mle_ppl._src.engine.likelihood.likelihood_for` are
    at least as fast. ``MLE_PPL_CACHE=0`` turns this cache off with the function cache. Storage,
    atomic writes, corrupt entries and the size bound are those of :mod:`.diskcache`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import sys
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mle_ppl._src.engine import diskcache
from mle_ppl._src.engine.compiled import DataFunction, Quiet
from mle_ppl._src.engine.likelihood import Likelihood

_log = logging.getLogger("mle_ppl.cache")

#: Bumped when the layout of an entry or the text of a key changes.
FORMAT = 1
#: The compiled functions of a :class:`Likelihood` an entry can hold (its cached properties).
FUNCTIONS = ("_fn_value_and_grad", "_fn_value", "_fn_hessian", "_fn_pointwise",
             "_fn_constrained")
#: Attributes of a Likelihood that only its PyMC model and graph can give (built on first use).
GRAPH_ATTRIBUTES = ("model", "_point", "_x", "_nll", "_pointwise", "_constrained",
                    "_deterministics")
_VERSIONED = ("pytensor", "pymc", "numpy", "scipy", "numba", "pandas", "formulaic")
_PYMC_STANDINS = {("pymc.logprob.utils", "CheckParameterValue"),
                  ("pymc.logprob.utils", "ParameterValueError")}


#: An entry without the ``_predictors`` of a Likelihood (it was never evaluated).
_MISSING = "missing"


class _Unsupported(Exception):
    """The fit cannot be reproduced from an entry (nothing is written)."""


# ----------------------------------------------------------------------------------- keys
@cache
def _source_hash() -> str:
    """SHA-256 of mle-ppl's own source (``mle_ppl/_src``): an edited checkout is a new key."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@cache
def installed() -> dict[str, str]:
    """Installed distributions' versions from their ``name-version.dist-info`` folder names.

    What ``importlib.metadata.version`` gives (tested), without parsing each METADATA file
    (~0.1-0.3 s for the packages of the key on this machine).
    """
    out: dict[str, str] = {}
    for entry in sys.path:
        if not entry:  # the working directory (python -c): no installed packages there
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                dist, _, version = name.rsplit(".", 1)[0].partition("-")
                out.setdefault(dist.lower().replace("_", "-"), version.split("-")[0])
    return out


@cache
def _versions() -> str:
    found = installed()
    out = [f"python {sys.version}", f"mle-ppl source {_source_hash()}"]
    out += [f"{dist} {found.get(dist, '-')}" for dist in _VERSIONED]
    return "\n".join(out)


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def spec_key(path: Path, raw: bytes) -> str:
    """Key of a model file's spec entry: its resolved path and bytes, versions, source."""
    return "spec-" + _sha("mle-ppl model file", FORMAT, _versions(), path.resolve(), raw)


def fit_key(skey: str, bound, *, likelihood_only: bool, mode: str, random) -> str:
    """Key of a fit entry: the spec key, the bound data's schema and row count, the options."""
    arrays = [(name, a.dtype.str, a.shape[1:]) for name, a in bound.arrays.items()]
    return "fit-" + _sha(skey, repr(bound.structure), bound.n, repr(arrays),
                         bool(likelihood_only), mode,
                         repr(None if random is None else tuple(random)),
                         os.environ.get("PYTENSOR_FLAGS", ""))


# ------------------------------------------------------------------------------ pickling
@cache
def standins() -> dict[tuple[str, str], type]:
    """Stand-ins for the PyMC classes a compiled log-likelihood holds, when PyMC is not loaded.

    ``CheckParameterValue`` is PyTensor's ``CheckAndRaise`` with PyMC's exception and message (a
    parameter outside its support raises); the stand-in has the same properties, ``perform`` and
    string, and raises a ``ValueError`` subclass of the same name.
    """
    from pytensor.raise_op import CheckAndRaise

    class ParameterValueError(ValueError):
        """Stand-in for ``pymc.logprob.utils.ParameterValueError``."""

    class CheckParameterValue(CheckAndRaise):
        """Stand-in for ``pymc.logprob.utils.CheckParameterValue``."""

        __props__ = ("msg", "exc_type", "can_be_replaced_by_ninf")

        def __init__(self, msg: str = "", can_be_replaced_by_ninf: bool = False):
            super().__init__(ParameterValueError, msg)
            self.can_be_replaced_by_ninf = can_be_replaced_by_ninf

        def __str__(self):
            return f"Check{{{self.msg}}}"

    return {("pymc.logprob.utils", "CheckParameterValue"): CheckParameterValue,
            ("pymc.logprob.utils", "ParameterValueError"): ParameterValueError}


class _Unpickler(pickle.Unpickler):
    """Reads an entry; PyMC classes become :func:`standins` while PyMC is not imported."""

    def find_class(self, module, name):
        if module.split(".")[0] == "pymc" and "pymc" not in sys.modules:
            found = standins().get((module, name))
            if found is None:  # never written (see _Pickler); an entry from elsewhere
                raise pickle.UnpicklingError(f"entry needs {module}.{name}")
            return found
        return super().find_class(module, name)


class _Pickler(pickle.Pickler):
    """Writes an entry; refuses one holding a PyMC object that has no stand-in."""

    def reducer_override(self, obj):
        kind = obj if isinstance(obj, type) else type(obj)
        module = getattr(kind, "__module__", None) or ""
        if module.split(".")[0] == "pymc" and (module, kind.__qualname__) not in _PYMC_STANDINS:
            raise _Unsupported(f"the compiled functions hold {module}.{kind.__qualname__}")
        return NotImplemented


# ------------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class SpecInfo:
    """What binding data to a TOML model file needs, without PyMC."""

    name: str
    description: str
    file: str  #: the file's name as messages show it
    path: Path
    items: tuple  #: the :class:`~mle_ppl._src.model.data.DataItem` of the file
    default_data: str | None  #: ``[model] data``, relative to the file

    @property
    def default_data_path(self) -> Path | None:
        if self.default_data is None:
            return None
        p = Path(self.default_data)
        return p if p.is_absolute() else self.path.parent / p


class CachedSpec:
    """A TOML model file's spec as the fit cache holds it (name, description, data binding).

    Everything else (``build_model``, ``model_for``, priors, ...) is answered by the real
    :class:`~mle_ppl.ModelSpec`, loaded from the file (importing PyMC) on first use.
    """

    kind = "toml"

    def __init__(self, info: SpecInfo):
        self._info = info
        self._loaded = None

    name = property(lambda self: self._info.name)
    description = property(lambda self: self._info.description)
    path = property(lambda self: self._info.path)
    default_data_path = property(lambda self: self._info.default_data_path)

    def bind(self, data, levels=None):
        """Bind ``data`` to the file's data names (the same checks as ``ModelSpec.bind``)."""
        from mle_ppl._src.model.data import bind

        return bind(list(self._info.items), data, file=self._info.file, fixed_levels=levels)

    def loaded(self):
        """The real ModelSpec of the file (imports PyMC)."""
        if self._loaded is None:
            from mle_ppl._src.model.library import load_model

            self._loaded = load_model(self._info.path)
        return self._loaded

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_info", "_loaded"):
            raise AttributeError(name)
        return getattr(self.loaded(), name)

    def __repr__(self) -> str:
        return f"<ModelSpec {self.name!r} from {str(self.path)!r} (cached)>"


class CachedLikelihood(Likelihood):
    """A :class:`Likelihood` rebuilt from a fit entry: compiled functions on the bound arrays.

    The evaluation methods are the Likelihood's own; what needs the PyMC model or graph
    (:data:`GRAPH_ATTRIBUTES`, and the compiled functions the entry does not hold) builds the
    ``pm.Model`` from the file and the same bound data on first use.
    """

    def __init__(self, entry: dict, spec: CachedSpec, bound):
        # no Likelihood.__init__: it builds the graph from a pm.Model
        self._spec_view, self._bound = spec, bound
        self._coords = _coords_from(entry["coords"], bound)
        for k, v in entry["layout"].items():
            setattr(self, k, v)
        self.bounded = np.array(self.bounded, dtype=bool)
        self.bounded.flags.writeable = False
        self._n_obs_by_shapes = {}
        for name, stored in entry["functions"].items():
            self.__dict__[name] = _restore(stored, bound, self._coords)
        if entry["predictors"] != _MISSING:  # (a dict, None or the string)
            self.__dict__["_predictors"] = _predictors(entry["predictors"], bound, self._coords)
        self._count = entry["count"]

    def __getattr__(self, name):
        if name in GRAPH_ATTRIBUTES and "_spec_view" in self.__dict__:
            self._build_model()
            return self.__dict__[name]
        raise AttributeError(name)

    def _build_model(self) -> None:
        """The PyMC model and graph, from the file and the bound data (imports PyMC)."""
        spec = self._spec_view.loaded()
        # a model of its own (not the spec's per-structure cache, which a later model_for call
        # would re-bind to other data): this objective's snapshot stays its fit's data
        model, _ = spec._build_pm(self._bound, priors=None)
        self.__dict__["model"] = model
        self.__dict__["_point"] = model.initial_point()
        deterministic = self.deterministic_names
        self._build_graph()
        names = [(rv.name, tuple(np.shape(self._point[v.name])))
                 for rv, v in zip(model.free_RVs, model.value_vars, strict=True)]
        if (names != [(b.name, b.shape) for b in self.blocks]
                or self.deterministic_names != deterministic
                or not np.array_equal(Likelihood.x0(self), self._x0)):
            raise RuntimeError("internal: the cached fit's layout differs from the model's; "
                               "clear the cache (MLE_PPL_CACHE_DIR) and report this.")

    @property
    def built(self) -> bool:
        """True once the PyMC model has been built (something needed it)."""
        return "model" in self.__dict__

    def x0(self) -> np.ndarray:
        return np.array(self._x0, dtype=float)

    def snapshot(self) -> tuple:
        # the model built on demand is this objective's own, holding this fit's data
        return super().snapshot() if self.built else ()

    def fit_coords(self) -> dict:
        """The coordinates the PyMC model would have (``dict(model.coords)``)."""
        return dict(self._coords)

    def count_obs(self, x: np.ndarray | None = None) -> int:
        return sum(int(np.prod(self._bound.arrays[item].shape[
            :self._bound.arrays[item].ndim - supp], dtype=int)) for item, supp in self._count)


def _coords_from(recipe, bound) -> dict:
    out = {}
    for dim, source in recipe:
        out[dim] = tuple(np.arange(bound.n)) if source is None else tuple(bound.coords[source])
    return out


def _inputs(recipe, bound, coords) -> list:
    out = []
    for kind, name, dtype in recipe:
        value = bound.arrays[name] if kind == "item" else len(coords[name])
        out.append(np.asarray(value, dtype=np.dtype(dtype)))
    return out


def _restore(stored, bound, coords):
    _, fn, recipe, quiet = stored
    df = DataFunction(fn, _inputs(recipe, bound, coords))
    return Quiet(df) if quiet else df


def _predictors(state, bound, coords):
    """The Likelihood's :class:`~mle_ppl._src.engine.predictors.PredictorEval` (or None)."""
    if state is None:
        return None
    from mle_ppl._src.engine.predictors import PredictorEval

    ev = PredictorEval.__new__(PredictorEval)
    for k, v in state.items():
        if isinstance(v, tuple) and v[:1] == ("function",):
            v = _restore(v, bound, coords)
        elif isinstance(v, tuple) and v[:1] == ("sources",):
            v = _inputs(v[1], bound, coords)
        setattr(ev, k, v)
    ev.forget()
    return ev


# ------------------------------------------------------------------------ lookup, record
@dataclass
class Prepared:
    """A model file with its data bound, and what the cache has for it."""

    spec: Any  #: ModelSpec (miss) or CachedSpec (hit)
    bound: Any  #: the BoundData
    spec_key: str
    key: str
    info: SpecInfo | None  #: to write as the spec entry (None: it exists)
    objective: CachedLikelihood | None = None  #: the hit
    known: bool = False  #: the cache knows this fit cannot be cached


def prepare(model, data, *, likelihood_only: bool, mode: str, random) -> Prepared | None:
    """Bind ``data`` to the TOML model file ``model`` and look the fit up in the cache.

    None when this cache does not apply (a pm.Model, a Python model file, PyMC already imported,
    the cache off, no default data): the caller takes the normal path.
    """
    from mle_ppl._src.model.library import toml_file

    path = toml_file(model)
    if path is None or "pymc" in sys.modules or diskcache.cache_dir() is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError:
        return None  # load_model says why
    skey = spec_key(path, raw)
    info = diskcache.load(skey)  # a SpecInfo: model.data's classes only, no PyMC
    spec = None
    if not isinstance(info, SpecInfo):
        from mle_ppl._src.model.library import load_model

        spec = load_model(path)  # imports PyMC
        info = SpecInfo(name=spec.name, description=spec.description, file=spec._file,
                        path=spec.path, items=spec._items, default_data=spec._default_data)
        new_info = info
    else:  # the path as given now (the key holds the resolved one): relative to this cwd
        info, new_info = replace(info, path=path), None
    if data is None:
        p = info.default_data_path
        if p is None or not p.is_file():
            return None  # the normal path gives the error
        from mle_ppl._src.model.data import read_table

        data = read_table(p, file=info.file)
    view = CachedSpec(info)
    bound = view.bind(data)
    if any(a.dtype.kind in "fc" and not np.all(np.isfinite(a)) for a in bound.arrays.values()):
        return None  # the normal path names the variable
    key = fit_key(skey, bound, likelihood_only=likelihood_only, mode=mode, random=random)
    entry = None if new_info is not None else _load_entry(key)
    if entry is not None and "uncacheable" not in entry:
        return Prepared(view, bound, skey, key, None, CachedLikelihood(entry, view, bound))
    if spec is None:
        spec = view.loaded()
    return Prepared(spec, bound, skey, key, new_info, known=entry is not None)


def _load_entry(key: str) -> dict | None:
    """The fit entry (or a note that the fit cannot be cached), None if missing or unusable."""
    payload = diskcache.load(key)
    if not isinstance(payload, bytes):
        return None
    try:
        entry = _Unpickler(io.BytesIO(payload)).load()
        import pytensor

        if entry["format"] != FORMAT or entry["floatX"] != pytensor.config.floatX:
            return None
        return entry
    except Exception as err:  # noqa: BLE001 - an unusable entry is rebuilt by the normal path
        _log.debug("ignoring fit entry %s: %s: %s", key, type(err).__name__, err)
        return None


def record(prep: Prepared, est) -> bool:
    """After a normal fit of ``prep``: write its entry (True), or nothing when the fit cannot be
    reproduced from one (another objective, data the recipes do not reproduce, PyMC objects)."""
    import pytensor

    if prep.known:
        return False  # already noted as not cacheable
    if prep.info is not None:
        diskcache.store(prep.spec_key, prep.info)
    lik = est.likelihood
    try:
        if type(lik) is not Likelihood:
            raise _Unsupported(f"the objective is a {type(lik).__name__}")
        buf = io.BytesIO()
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(_entry(lik, prep.spec, prep.bound))
        payload = buf.getvalue()
    except Exception as why:  # noqa: BLE001 - unpicklable functions, recipes that do not hold
        _log.debug("fit not cached: %s: %s", type(why).__name__, why)
        # noted, so that later runs do not try again (same key: same model, schema, options)
        payload = pickle.dumps({"format": FORMAT, "floatX": pytensor.config.floatX,
                                "uncacheable": f"{type(why).__name__}: {why}"})
    return diskcache.store(prep.key, payload)


def _entry(lik: Likelihood, spec, bound) -> dict:
    import pytensor
    from pytensor.tensor.elemwise import Elemwise

    model = lik.model
    coords_now = dict(model.coords)
    containers = spec._container_names(bound)  # data name -> pm.Data name
    item_of = {c: item for item, c in containers.items()}
    dims = {spec._dim(d): d for d in bound.coords}
    coords = []
    for dim, values in coords_now.items():
        if dim in dims:
            coords.append((dim, dims[dim]))
        elif values is not None and len(values) == bound.n:
            coords.append((dim, None))
        else:
            raise _Unsupported(f"coordinate {dim!r}")
    if _coords_from(coords, bound) != coords_now or list(coords_now) != [d for d, _ in coords]:
        raise _Unsupported("coordinates")
    def source(var) -> tuple:
        """The recipe of a data input (a shared variable), checked against the bound data."""
        if not hasattr(var, "get_value"):
            raise _Unsupported("a constant array in the graph")
        value = np.asarray(var.get_value(borrow=True))
        if var.name in item_of:
            ref, recipe = bound.arrays[item_of[var.name]], ("item", item_of[var.name])
        elif var.name in coords_now:
            ref, recipe = np.asarray(len(coords_now[var.name])), ("dimlen", var.name)
        else:
            raise _Unsupported(f"data input {var.name!r}")
        if ref.shape != value.shape or not np.array_equal(ref, value):
            raise _Unsupported(f"data input {var.name!r} is not the bound array")
        return (*recipe, value.dtype.str)

    def function(fn) -> tuple:
        quiet = isinstance(fn, Quiet)
        df = fn.fn if quiet else fn
        if not isinstance(df, DataFunction):
            raise _Unsupported(f"a compiled function is a {type(df).__name__}")
        vars_ = [getattr(g, "__self__", None) if shared else g for g, shared in df._getters]
        return ("function", df.fn, tuple(source(v) for v in vars_), quiet)

    functions = {name: function(lik.__dict__[name]) for name in FUNCTIONS
                 if lik.__dict__.get(name) is not None}
    predictors = lik.__dict__.get("_predictors", _MISSING)
    if predictors is not None and predictors is not _MISSING:
        # engine.predictors: compiled functions of (x, t) and the data matrices, no graph
        state = {}
        for k, v in vars(predictors).items():
            if isinstance(v, Quiet | DataFunction):
                state[k] = function(v)
            elif k == "sources":
                state[k] = ("sources", tuple(source(var) for var in v))
            elif k.startswith(("_last", "_kept")):
                continue  # memory of the last evaluations: PredictorEval.forget() sets it
            elif v is None or isinstance(v, int | float | str | list | tuple | np.ndarray):
                state[k] = v
            else:
                raise _Unsupported(f"predictors hold a {type(v).__name__} ({k})")
        predictors = state
    count = []
    for rv in model.observed_RVs:
        value = model.rvs_to_values[rv]
        # as Likelihood.count_obs: a data container behind a cast
        while (value.owner is not None and isinstance(value.owner.op, Elemwise)
               and len(value.owner.inputs) == 1):
            value = value.owner.inputs[0]
        supp = getattr(rv.owner.op, "ndim_supp", None)
        if (not hasattr(value, "get_value") or value.name not in item_of
                or not isinstance(supp, int) or supp > value.get_value(borrow=True).ndim):
            raise _Unsupported(f"observation count of {rv.name!r}")
        count.append((item_of[value.name], supp))
    layout = {k: getattr(lik, k) for k in (
        "mode", "notes", "likelihood_only", "blocks", "n_params", "labels", "observed_names",
        "observed_ops", "deterministic_names", "_hessian_kind")}
    layout["bounded"] = np.array(lik.bounded)
    layout["_x0"] = lik.x0()
    if "hessian_kind" in lik.__dict__:
        layout["hessian_kind"] = lik.hessian_kind
    entry = {"format": FORMAT, "floatX": pytensor.config.floatX, "layout": layout,
             "functions": functions, "predictors": predictors, "count": tuple(count),
             "coords": tuple(coords)}
    check = CachedLikelihood(entry, CachedSpec(SpecInfo(spec.name, spec.description, spec._file,
                                                        spec.path, spec._items,
                                                        spec._default_data)), bound)
    if check.count_obs() != lik.count_obs() or not np.array_equal(check.x0(), lik.x0()):
        raise _Unsupported("observation count or start")
    return entry
