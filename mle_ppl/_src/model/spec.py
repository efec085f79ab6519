"""ModelSpec: a loaded model file, its data binding, and the cached ``pm.Model`` it builds.

:func:`~mle_ppl.load_model` (:mod:`.library`) reads a file into a :class:`ModelSpec`. The data are
checked when they are bound (:func:`.data.bind`, every check, before any PyMC object is built).
``spec.model_for(data)`` builds the ``pm.Model`` (flat priors, data in ``pm.Data``) and caches it
per data structure (columns, dtypes, levels): a new table of the same structure is swapped in
with ``pm.set_data``, so the compiled likelihood is reused (no recompilation).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from mle_ppl._src.errors import DataError, MLEError, ModelFileError, did_you_mean, first_line
from mle_ppl._src.model.data import BoundData, DataItem, bind, read_table, suggest
from mle_ppl._src.model.expressions import Expression, parse_distribution_call
from mle_ppl._src.model.names import normalize
from mle_ppl._src.model.priors import make_param
from mle_ppl._src.model.random import RandomDecl, build_random
from mle_ppl._src.model.toml import OBS_DIM, LikelihoodDecl, ModelDecl, ParamDecl, key_where

#: Most cached pm.Models (data structures) kept per spec.
CACHE_SIZE = 8


class ModelSpec:
    """A loaded model file: name, description, priors, and how to build its ``pm.Model``.

    Use :func:`load_model` to create one. ``model_for(data)`` returns the (cached) flat-prior
    ``pm.Model`` and the bound table; ``build_model(data, priors=...)`` a fresh model with
    priors for the Bayesian fit.

    Examples
    --------
    >>> spec = load_model("linear_regression")      # doctest: +SKIP
    >>> pm_model, table = spec.model_for(spec.default_data())   # doctest: +SKIP
    """

    def __init__(self, *, name: str, description: str, path: Path | None,
                 priors: dict[str, str], _file: str, _items=(), _params=(), _likelihoods=(),
                 _default_data: str | None = None, _build=None, _build_takes_priors=False,
                 _randoms=()):
        self.name = name
        self.description = description
        self.path = path
        self.priors = dict(priors)
        self._file = _file
        self._items: tuple[DataItem, ...] = tuple(_items)
        self._params: tuple[ParamDecl, ...] = tuple(_params)
        self._likelihoods: tuple[LikelihoodDecl, ...] = tuple(_likelihoods)
        self._randoms: tuple[RandomDecl, ...] = tuple(_randoms)
        self._default_data = _default_data
        self._build = _build
        self._build_takes_priors = _build_takes_priors
        self._cache: OrderedDict = OrderedDict()

    @classmethod
    def from_decl(cls, decl: ModelDecl) -> ModelSpec:
        """The spec of a validated TOML model file (:func:`.toml.parse_toml`)."""
        return cls(name=decl.name, description=decl.description, path=decl.path,
                   priors=decl.priors, _file=decl.file, _items=decl.items, _params=decl.params,
                   _likelihoods=decl.likelihoods, _default_data=decl.default_data,
                   _randoms=decl.randoms)

    def __repr__(self) -> str:
        where = f" from {str(self.path)!r}" if self.path else ""
        return f"<ModelSpec {self.name!r}{where}>"

    @property
    def kind(self) -> str:
        """``"toml"`` or ``"python"``."""
        return "python" if self._build is not None else "toml"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the declared parameters (TOML files), in declaration order."""
        return tuple(p.name for p in self._params)

    @property
    def random_names(self) -> tuple[str, ...]:
        """Names of the declared random effects (``[random]`` or formula ``(1 | g)`` terms)."""
        return tuple(r.name for r in self._randoms)

    @property
    def default_data_path(self) -> Path | None:
        """The file named by ``[model] data``, resolved relative to the model file."""
        if self._default_data is None:
            return None
        p = Path(self._default_data)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def default_data(self):
        """The default data table (``[model] data``, relative to the file), or None."""
        p = self.default_data_path
        if p is None:
            return None
        if not p.is_file():
            raise DataError(f"model file {self._file!r}, key model.data: the default data file "
                            f"{str(p)!r} does not exist; pass data= or fix the path.")
        return read_table(p, file=self._file)

    # --------------------------------------------------------------- binding
    def bind(self, data, levels=None) -> BoundData:
        """Bind ``data`` to this model's data names (every check happens here); ``levels``:
        categorical levels of the whole data when ``data`` is one chunk of it.

        Raises
        ------
        DataError
        """
        if self.kind == "python":
            raise ModelFileError(f"{self._file!r} is a Python model file; its build(data) reads "
                                 "the table itself.")
        return bind(list(self._items), data, file=self._file, fixed_levels=levels)

    def model_for(self, data) -> tuple[pm.Model, Any]:
        """The flat-prior ``pm.Model`` for ``data`` and the bound table.

        Models are cached per data structure (columns, dtypes, levels): a table of the same
        structure is swapped into the cached model with ``pm.set_data`` (no recompilation), and
        the same ``pm.Model`` object is returned.
        """
        if self.kind == "python":
            table = read_table(data, file=self._file)
            return self._call_build(table, None), table
        bound = self.bind(data)
        return self.model_for_bound(bound), bound.table

    def model_for_bound(self, bound: BoundData) -> pm.Model:
        """The cached ``pm.Model`` of ``bound``'s structure with its arrays swapped in."""
        key = bound.structure
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            model, containers = hit
            values = {containers[name]: arr for name, arr in bound.arrays.items()}
            pm.set_data(values, model=model, coords={OBS_DIM: np.arange(bound.n)})
            return model
        model, containers = self._build_pm(bound, priors=None)
        self._cache[key] = (model, containers)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return model

    def swap_in(self, bound: BoundData) -> pm.Model | None:
        """Swap ``bound``'s arrays into the cached model of its structure, directly: each
        container's ``set_value`` (no copy) and the row count, without ``pm.set_data``'s checks
        (``bind`` made the arrays) or new row coordinates (chunks of rows are not labelled).
        ``None`` when no model of that structure is cached."""
        hit = self._cache.get(bound.structure)
        if hit is None:
            return None
        model, containers = hit
        for name, arr in bound.arrays.items():
            var = model[containers[name]]
            # in the container's dtype (PyMC keeps integer data as int32, say), aligned (arrays
            # unpickled from a Dask transfer may not be): a copy only when needed
            var.set_value(np.require(arr, dtype=var.dtype, requirements="A"), borrow=True)
        length = model.dim_lengths.get(OBS_DIM)
        if hasattr(length, "set_value"):
            length.set_value(np.asarray(bound.n, dtype=length.dtype))
        return model

    def build_model(self, data, priors: Mapping[str, str] | None = None) -> pm.Model:
        """A fresh ``pm.Model`` for ``data``; ``priors`` (name -> ``"Normal(0, 2.5)"``) replace
        the flat priors of the named parameters (``None``: all flat).

        Examples
        --------
        >>> spec = load_model("logistic_regression")                  # doctest: +SKIP
        >>> m = spec.build_model(spec.default_data(), priors=spec.priors)   # doctest: +SKIP
        """
        if self.kind == "python":
            table = read_table(data, file=self._file)
            if priors:
                if not self._build_takes_priors:
                    raise ModelFileError(
                        f"Python model file {self._file!r}: build(data) takes no priors; define "
                        "build(data, priors=None) to accept them.")
                return self._call_build(table, dict(priors))
            return self._call_build(table, None)
        priors = dict(priors or {})
        names = {p.name for p in self._params}
        priors = {normalize(k): v for k, v in priors.items()}  # µ is μ, as in Python
        for k, text in priors.items():
            if k not in names:
                tail = f"{did_you_mean(k, names)} Parameters: {sorted(names)}."
                raise ModelFileError(f"model file {self._file!r}: priors name unknown parameter "
                                     f"{k!r}.{tail}",
                                     cli=f"--prior names {k!r}, which is not a parameter of "
                                         f"model file {self._file!r}.{tail}")
            parse_distribution_call(text, where=f"model file {self._file!r}, prior of {k!r}")
        model, _ = self._build_pm(self.bind(data), priors=priors)
        return model

    # --------------------------------------------------------------- building
    def _container_names(self, bound: BoundData) -> dict[str, str]:
        taken = {self._dim(d) for d in bound.coords} | {OBS_DIM} | {p.name for p in self._params}
        taken |= {lk.name for lk in self._likelihoods} | {r.name for r in self._randoms}
        out = {}
        for it in self._items:
            cname = it.name if it.name not in taken else f"{it.name}_data"
            if cname in taken or cname in out.values():
                raise ModelFileError(f"model file {self._file!r}, key {it.key}: the name "
                                     f"{cname!r} is taken; rename the data entry.")
            out[it.name] = cname
        return out

    def _build_pm(self, bound: BoundData, priors: Mapping[str, str] | None):
        file = self._file
        containers = self._container_names(bound)
        coords = {OBS_DIM: np.arange(bound.n),
                  **{self._dim(d): list(v) for d, v in bound.coords.items()}}
        for r in self._randoms:
            if r.effects is not None:
                coords[self._dim(r.effect_dim)] = list(r.effects)
            elif r.effect_dim is not None and len(coords[self._dim(r.effect_dim)]) != 2:
                raise ModelFileError(
                    f"model file {file!r}, key {r.key}.dims: correlated effects take two "
                    f"effects (intercept and slope); the dim {r.effect_dim!r} has "
                    f"{len(coords[self._dim(r.effect_dim)])}: "
                    f"{list(coords[self._dim(r.effect_dim)])[:5]}.")
        ref_index: dict[str, int] = {}
        for it in self._items:
            if it.kind == "categorical" and it.reference is not None:
                ref_index[self._dim(it.dim)] = bound.levels[it.name].index(str(it.reference))
        index_names = frozenset(it.name for it in self._items if it.kind == "categorical")
        try:
            with pm.Model(coords=coords) as model:
                env: dict[str, Any] = {}
                for it in self._items:
                    arr = bound.arrays[it.name]
                    dims = (OBS_DIM,) if arr.ndim == 1 else (OBS_DIM, self._dim(it.dim))
                    data = pm.Data(containers[it.name], arr, dims=dims)
                    # static column counts (rows stay free for set_data): a shape mismatch in
                    # an expression is then an error at build time, naming its key. A count of
                    # 1 stays free: a static 1 is broadcastable, and its gradient (summed over
                    # a broadcast axis) no longer fits the (n, 1) data at run time
                    cols = tuple(None if c == 1 else c for c in arr.shape[1:])
                    env[it.name] = pt.specify_shape(data, (None, *cols))
                for p in self._params:
                    prior = (priors or {}).get(p.name)
                    p = replace(p, dims=tuple(self._dim(d) for d in p.dims))
                    rv = make_param(p, prior, file)
                    size = (tuple(len(coords[d]) for d in p.dims) if p.dims
                            else p.shape if p.shape else ())
                    if rv.ndim == len(size):  # a size of 1 stays free (see the data above)
                        rv = pt.specify_shape(rv, tuple(None if k == 1 else k for k in size))
                    env[p.name] = _pad_reference(rv, p.dims, ref_index)
                for r in self._randoms:
                    rdims = (self._dim(r.group),) + (
                        (self._dim(r.effect_dim),) if r.effect_dim is not None else ())
                    try:
                        env[r.name] = build_random(r, env, rdims, key_where(file, r.key))
                    except MLEError:
                        raise
                    except Exception as err:  # noqa: BLE001 - PyMC's many errors, all ours
                        raise ModelFileError(f"{key_where(file, r.key)}: cannot build "
                                             f"{r.distribution.name} random effect {r.name!r}: "
                                             f"{first_line(err)}") from None
                for lk in self._likelihoods:
                    kwargs = {}
                    for k, e in lk.params:
                        where = key_where(file, f"{lk.key}.{k}")
                        if isinstance(e, Expression):
                            try:
                                kwargs[k] = e.to_tensor(env, index_names=index_names)
                            except MLEError:
                                raise
                            except Exception as err:  # noqa: BLE001 - PyTensor's many errors
                                raise ModelFileError(f"{where}: cannot build {e.text!r}: "
                                                     f"{first_line(err)}") from None
                        else:
                            kwargs[k] = e
                    obs = env[lk.observed]
                    _check_param_shapes(lk, kwargs, obs, bound.n, file)
                    dims = ((OBS_DIM,) if obs.ndim == 1
                            else (OBS_DIM, self._dim(self._item(lk.observed).dim)))
                    try:
                        lk.distribution.cls(lk.name, **kwargs, observed=obs, dims=dims)
                    except MLEError:
                        raise
                    except Exception as err:  # noqa: BLE001 - PyMC's many errors, all ours
                        raise ModelFileError(f"{key_where(file, lk.key)}: cannot build "
                                             f"{lk.distribution.name}({', '.join(kwargs)}) "
                                             f"observing {lk.observed!r}: {first_line(err)}"
                                             ) from None
        except MLEError:
            raise
        except Exception as err:  # noqa: BLE001 - anything else while building is the file's
            raise ModelFileError(f"model file {file!r}: cannot build the model: "
                                 f"{first_line(err)}") from None
        return model, containers

    def _dim(self, dim: str) -> str:
        """PyMC name of a dim: the data name, or ``<name>_dim`` if an observed variable has it."""
        return f"{dim}_dim" if any(lk.name == dim for lk in self._likelihoods) else dim

    def _item(self, name: str) -> DataItem:
        return next(it for it in self._items if it.name == name)

    def _call_build(self, table, priors):
        import warnings

        from pymc.exceptions import ImputationWarning

        try:
            with warnings.catch_warnings():
                # missing observed values are refused by the fit with their rows
                # (engine.likelihood.check_model); PyMC's notice would only repeat it on stderr
                warnings.simplefilter("ignore", ImputationWarning)
                model = (self._build(table, priors=priors) if priors is not None
                         else self._build(table))
        except MLEError:
            raise
        except KeyError as err:
            cols = [str(c) for c in table.columns]
            key = err.args[0] if err.args else "?"
            raise DataError(f"Python model file {self._file!r}: build(data) asked for column "
                            f"{key!r}, which is not in the data table."
                            f"{suggest(str(key), cols)} Columns are {cols[:20]}.") from None
        except Exception as err:  # noqa: BLE001 - user code: report it without a traceback
            raise ModelFileError(f"Python model file {self._file!r}: build(data) raised "
                                 f"{type(err).__name__}: {first_line(err)}") from None
        if not isinstance(model, pm.Model):
            raise ModelFileError(f"Python model file {self._file!r}: build(data) must return a "
                                 f"pymc.Model, got {type(model).__name__}.")
        return model



def _check_param_shapes(lk: LikelihoodDecl, kwargs: Mapping[str, Any], obs, n: int,
                        file: str) -> None:
    """Each parameter of an elementwise distribution must broadcast to the observed data.

    Checked on static shapes (column counts and parameter sizes are known when the model is
    built), so ``mu = "alpha + beta"`` with ``beta`` of size 2 against 50 rows is an error naming
    ``likelihood.y.mu`` rather than a shape error deep in the first evaluation.
    """
    op = getattr(lk.distribution.cls, "rv_op", None)
    if getattr(op, "ndim_supp", None) != 0 or any(getattr(op, "ndims_params", [1])):
        return  # vector-valued parameters (Categorical p, MvNormal): PyMC checks them
    want = (n, *obs.type.shape[1:])
    for k, value in kwargs.items():
        shape = getattr(getattr(value, "type", None), "shape", None)
        if shape is None:
            continue
        bad = len(shape) > len(want) or any(
            a is not None and b is not None and a not in (1, b)
            for a, b in zip(reversed(shape), reversed(want), strict=False))
        if bad:
            from mle_ppl._src.model.expressions import shape_text

            expr = dict(lk.params).get(k)
            text = getattr(expr, "text", k)
            obs_text = "(" + ", ".join(map(str, want)) + ("," if len(want) == 1 else "") + ")"
            raise ModelFileError(
                f"{key_where(file, f'{lk.key}.{k}')}: {text!r} has shape {shape_text(value)}, "
                f"which does not match the data {lk.observed!r} of shape {obs_text} (one value "
                "per row). Use parameters with dims of the data (e.g. x @ beta), or index "
                "them by a categorical (alpha[group]).")


def _pad_reference(rv, dims: tuple[str, ...], ref_index: Mapping[str, int]):
    """Insert zeros at the reference level of each categorical dim (treatment coding)."""
    out = rv
    for axis, d in enumerate(dims):
        if d not in ref_index:
            continue
        r = ref_index[d]
        zshape = [out.shape[i] for i in range(out.ndim)]
        zshape[axis] = 1
        zeros = pt.zeros(zshape, dtype=out.dtype)
        before = [slice(None)] * out.ndim
        after = [slice(None)] * out.ndim
        before[axis] = slice(0, r)
        after[axis] = slice(r, None)
        out = pt.concatenate([out[tuple(before)], zeros, out[tuple(after)]], axis=axis)
    return out


