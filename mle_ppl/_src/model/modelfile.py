"""Model files: declarative TOML (docs/model-files.md) and Python ``build(data)`` files.

:func:`load_model` reads a file (or a bundled model by name) into a :class:`ModelSpec`. A spec is
checked completely when it is loaded (sections, keys, distributions and their parameters,
expressions, names, unused parameters); the data are checked when they are bound
(:mod:`mle_ppl._src.model.data`), before any PyMC object is built.

``spec.model_for(data)`` builds the ``pm.Model`` (flat priors, data in ``pm.Data``) and caches it
per data structure (columns, dtypes, levels): a new table of the same structure is swapped in
with ``pm.set_data``, so the compiled likelihood is reused (no recompilation).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import inspect
import math
import os
import sys
import tomllib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from mle_ppl._src.errors import DataError, MLEError, ModelFileError, did_you_mean
from mle_ppl._src.model.data import BoundData, DataItem, bind, read_table, suggest
from mle_ppl._src.model.expressions import (
    FUNCTIONS,
    DistributionInfo,
    Expression,
    get_distribution,
    parse_distribution_call,
    parse_expression,
)

#: The dim of the observations (rows of the data table).
OBS_DIM = "obs_id"

#: The one registry of TOML sections and their keys (None: free names).
SECTIONS: dict[str, tuple[str, ...] | None] = {
    "model": ("name", "description", "data", "formula", "family", "link", "offset", "exposure",
              "trials"),
    "data": None,
    "parameters": None,
    "likelihood": None,
    "priors": None,
}
DATA_KEYS = ("column", "columns", "levels", "reference", "categorical")
PARAMETER_KEYS = ("dims", "lower", "upper", "shape", "start")
LIKELIHOOD_KEYS = ("distribution", "observed")
FORMULA_ONLY_KEYS = ("family", "link", "offset", "exposure", "trials")

#: Most cached pm.Models (data structures) kept per spec.
CACHE_SIZE = 8

_RESERVED = {OBS_DIM, *FUNCTIONS}


# ------------------------------------------------------------------ declarations
@dataclass(frozen=True)
class ParamDecl:
    """A free parameter: flat on its support unless a prior is given to ``build_model``."""

    name: str
    key: str
    dims: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    lower: float | None = None
    upper: float | None = None
    start: float | None = None


@dataclass(frozen=True)
class LikelihoodDecl:
    """An observed variable: a distribution, its parameter expressions and its data."""

    name: str
    key: str
    distribution: DistributionInfo
    observed: str
    params: tuple[tuple[str, Expression | float], ...]


def _label(path: Path | None, fallback: str = "<string>") -> str:
    return path.name if path is not None else fallback


def _err(file: str, key: str | None, msg: str) -> ModelFileError:
    where = f"model file {file!r}" + (f", key {key}" if key else "")
    return ModelFileError(f"{where}: {msg}")


def _where(file: str, key: str) -> str:
    return f"model file {file!r}, key {key}"


def _is_number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _check_name(name: Any, file: str, key: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
        raise _err(file, key, f"{name!r} is not a valid name: use letters, digits and _ "
                              "(not starting with a digit or __).")
    if name in _RESERVED:
        raise _err(file, key, f"{name!r} is reserved (a function or the observation dim); "
                              "choose another name.")
    return name


def _check_keys(table: Mapping, allowed, file: str, key: str) -> None:
    for k in table:
        if k not in allowed:
            raise _err(file, f"{key}.{k}", f"unknown key {k!r}.{did_you_mean(k, allowed)} "
                                           f"Allowed keys in {key}: {list(allowed)}.")


def _as_str_list(v, file: str, key: str) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise _err(file, key, f"expected a string or a non-empty list of strings, got {v!r:.80}.")


# ------------------------------------------------------------------ TOML parsing
def _parse_data(section: Any, file: str) -> list[DataItem]:
    if not isinstance(section, dict):
        raise _err(file, "data", "[data] must be a table of name = column(s).")
    items = []
    for name, v in section.items():
        key = f"data.{name}"
        _check_name(name, file, key)
        if isinstance(v, str):
            items.append(DataItem(name, key, "vector", (v,)))
        elif isinstance(v, list):
            cols = _as_str_list(v, file, key)
            if len(set(cols)) != len(cols):
                raise _err(file, key, f"columns {list(cols)} are listed twice.")
            items.append(DataItem(name, key, "matrix", cols, dim=name))
        elif isinstance(v, dict):
            _check_keys(v, DATA_KEYS, file, key)
            if ("column" in v) == ("columns" in v):
                raise _err(file, key, "give exactly one of column = 'name' or columns = [...].")
            categorical = "levels" in v or "reference" in v or v.get("categorical", False)
            if "categorical" in v and not isinstance(v["categorical"], bool):
                raise _err(file, f"{key}.categorical", "expected true or false.")
            if "columns" in v:
                if categorical:
                    raise _err(file, key, "a categorical item takes one column = '...'.")
                cols = _as_str_list(v["columns"], file, f"{key}.columns")
                items.append(DataItem(name, key, "matrix", cols, dim=name))
                continue
            col = v["column"]
            if not isinstance(col, str):
                raise _err(file, f"{key}.column", f"expected a column name, got {col!r:.60}.")
            if not categorical:
                items.append(DataItem(name, key, "vector", (col,)))
                continue
            levels = v.get("levels")
            if levels is not None:
                if (not isinstance(levels, list) or len(levels) < 2
                        or not all(isinstance(x, str | int) and not isinstance(x, bool)
                                   for x in levels)):
                    raise _err(file, f"{key}.levels", "expected a list of at least two labels "
                                                      "(strings or integers).")
                if len({str(x) for x in levels}) != len(levels):
                    raise _err(file, f"{key}.levels", f"levels {levels} repeat a label.")
                levels = tuple(levels)
            ref = v.get("reference")
            if ref is not None:
                if not isinstance(ref, str | int) or isinstance(ref, bool):
                    raise _err(file, f"{key}.reference", f"expected a level label, got {ref!r}.")
                if levels is not None and str(ref) not in {str(x) for x in levels}:
                    raise _err(file, f"{key}.reference", f"the reference level {ref!r} is not "
                               f"among levels {list(levels)}."
                               f"{did_you_mean(str(ref), [str(x) for x in levels])}")
            items.append(DataItem(name, key, "categorical", (col,), levels=levels,
                                  reference=ref, dim=name))
        else:
            raise _err(file, key, "expected a column name, a list of columns, or a table "
                                  "{ column = ..., levels = [...], reference = ... }; got "
                                  f"{type(v).__name__}.")
    return items


def _parse_parameters(section: Any, file: str, dims: Mapping[str, DataItem]) -> list[ParamDecl]:
    if not isinstance(section, dict):
        raise _err(file, "parameters", "[parameters] must be a table of name = { ... }.")
    out = []
    for name, v in section.items():
        key = f"parameters.{name}"
        _check_name(name, file, key)
        if not isinstance(v, dict):
            raise _err(file, key, f"expected a table such as {{}} or {{ dims = 'x' }} or "
                                  f"{{ lower = 0 }}, got {v!r:.60}.")
        _check_keys(v, PARAMETER_KEYS, file, key)
        pdims: tuple[str, ...] = ()
        if "dims" in v:
            pdims = _as_str_list(v["dims"], file, f"{key}.dims")
            for d in pdims:
                if d not in dims:
                    raise _err(file, f"{key}.dims", f"unknown dim {d!r}.{did_you_mean(d, dims)} "
                               f"Dims come from [data] names with several columns or levels: "
                               f"{sorted(dims)}.")
            if len(set(pdims)) != len(pdims):
                raise _err(file, f"{key}.dims", f"dims {list(pdims)} repeat a dim.")
        shape = None
        if "shape" in v:
            s = v["shape"]
            s = [s] if type(s) is int else s
            if (not isinstance(s, list) or not s
                    or not all(type(i) is int and 1 <= i <= 100_000 for i in s)
                    or math.prod(s) > 1_000_000):
                raise _err(file, f"{key}.shape", f"expected a positive integer or list of them, "
                                                 f"got {v['shape']!r:.60}.")
            if pdims:
                raise _err(file, key, "give dims or shape, not both.")
            shape = tuple(s)
        bounds = {}
        for b in ("lower", "upper", "start"):
            if b in v:
                if not _is_number(v[b]):
                    raise _err(file, f"{key}.{b}", f"expected a finite number, got {v[b]!r:.60}.")
                bounds[b] = float(v[b])
        lo, hi = bounds.get("lower"), bounds.get("upper")
        if lo is not None and hi is not None and not lo < hi:
            raise _err(file, key, f"lower = {lo} must be below upper = {hi}.")
        st = bounds.get("start")
        if st is not None and ((lo is not None and st <= lo) or (hi is not None and st >= hi)):
            raise _err(file, f"{key}.start", f"start = {st} must lie strictly inside "
                                             f"({lo}, {hi}).")
        out.append(ParamDecl(name, key, pdims, shape, lo, hi, st))
    return out


def _parse_likelihood(section: Any, file: str, data_names: Mapping[str, DataItem],
                      known: Mapping[str, str]) -> list[LikelihoodDecl]:
    if not isinstance(section, dict) or not section:
        raise _err(file, "likelihood", "[likelihood] must name at least one observed variable, "
                                       "e.g. y = { distribution = 'Normal', mu = '...', "
                                       "sigma = '...' }.")
    out = []
    for name, v in section.items():
        key = f"likelihood.{name}"
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise _err(file, key, f"{name!r} is not a valid name.")
        if not isinstance(v, dict):
            raise _err(file, key, "expected a table { distribution = '...', <parameter> = "
                                  "'<expression>', ... }.")
        if "distribution" not in v:
            raise _err(file, key, "missing key 'distribution' (a PyMC distribution name such "
                                  "as 'Normal').")
        info = get_distribution(v["distribution"], where=_where(file, f"{key}.distribution"))
        if info.name in ("Flat", "HalfFlat"):
            raise _err(file, f"{key}.distribution", f"{info.name} has no likelihood; choose a "
                                                    "distribution for the data.")
        extra = {k: x for k, x in v.items() if k not in LIKELIHOOD_KEYS}
        for k in extra:
            if k not in info.params:
                raise _err(file, f"{key}.{k}",
                           f"{info.name} has no parameter {k!r}.{did_you_mean(k, info.params)} "
                           f"Its parameters are {list(info.params)}; other keys allowed here: "
                           f"{list(LIKELIHOOD_KEYS)}.")
        observed = v.get("observed", name)
        if not isinstance(observed, str):
            raise _err(file, f"{key}.observed", f"expected a [data] name, got {observed!r:.60}.")
        if observed not in data_names:
            ref = f"{key}.observed" if "observed" in v else key
            raise _err(file, ref, f"likelihood {name!r} has no data: {observed!r} is not a "
                                  f"[data] name.{did_you_mean(observed, data_names)} Add "
                                  f"{observed} = '<column>' to [data], or set observed = "
                                  "'<data name>'.")
        if name in known and known[name] == "parameter":
            raise _err(file, key, f"{name!r} is already a parameter.")
        params = []
        for k, x in extra.items():
            where = _where(file, f"{key}.{k}")
            if isinstance(x, str):
                params.append((k, parse_expression(x, known=known, where=where)))
            elif _is_number(x):
                params.append((k, float(x)))
            else:
                raise _err(file, f"{key}.{k}", f"expected an expression string or a number, "
                                               f"got {x!r:.60}.")
        out.append(LikelihoodDecl(name, key, info, observed, tuple(params)))
    return out


def _parse_priors(section: Any, file: str, params: Mapping[str, ParamDecl]) -> dict[str, str]:
    if not isinstance(section, dict):
        raise _err(file, "priors", "[priors] must be a table of parameter = 'Distribution(...)'.")
    out = {}
    for name, text in section.items():
        key = f"priors.{name}"
        if name not in params:
            raise _err(file, key, f"{name!r} is not a parameter.{did_you_mean(name, params)} "
                                  f"Parameters are {sorted(params)}.")
        if not isinstance(text, str):
            raise _err(file, key, f"expected a string such as 'Normal(0, 2.5)', got {text!r:.60}.")
        parse_distribution_call(text, where=_where(file, key))
        out[name] = text
    return out


def _formula_decls(model: dict, file: str):
    """Declarations of a formula model: [model] formula, family, link, offset, exposure, trials."""
    from mle_ppl._src.model.formula import FAMILIES, LINKS, MEAN_PARAM, split_formula

    lhs, rhs = split_formula(model["formula"], where=_where(file, "model.formula"))
    family_name = model.get("family", "gaussian")
    if family_name not in FAMILIES:
        raise _err(file, "model.family", f"unknown family {family_name!r}."
                   f"{did_you_mean(str(family_name), FAMILIES)} Families: {list(FAMILIES)}.")
    family = FAMILIES[family_name]
    link = model.get("link", family.default_link)
    if link not in LINKS:
        raise _err(file, "model.link", f"unknown link {link!r}.{did_you_mean(str(link), LINKS)} "
                                       f"Links: {list(LINKS)}.")
    for k in ("offset", "exposure", "trials"):
        if k in model and not isinstance(model[k], str):
            raise _err(file, f"model.{k}", f"expected a column name, got {model[k]!r:.60}.")
    outcome = lhs if lhs.isidentifier() and lhs not in _RESERVED else "y"
    if outcome in ("X", "beta", "offset", "exposure", "trials", *family.extra):
        outcome = f"{outcome}_obs"
    items = [DataItem("y", "model.formula", "vector", (lhs,)),
             DataItem("X", "model.formula", "design", dim="coef", formula=rhs)]
    eta = "X @ beta"
    if "offset" in model:
        items.append(DataItem("offset", "model.offset", "vector", (model["offset"],)))
        eta += " + offset"
    if "exposure" in model:
        items.append(DataItem("exposure", "model.exposure", "vector", (model["exposure"],)))
        eta += " + log(exposure)"
    dist = family.distribution
    like = {"distribution": dist, "observed": "y"}
    if family_name == "binomial":
        if "trials" in model:
            items.append(DataItem("trials", "model.trials", "vector", (model["trials"],)))
            like["n"] = "trials"
        else:
            like["distribution"] = dist = "Bernoulli"
    elif "trials" in model:
        raise _err(file, "model.trials", f"trials is for family = 'binomial', not "
                                         f"{family_name!r}.")
    mean = LINKS[link].format(eta=eta)
    params = {"beta": {"dims": "coef"}}
    for pname, (pspec, kw, _) in family.extra.items():
        params[pname] = dict(pspec)
        like[kw] = pname
    if family_name == "gamma":
        like["beta"] = f"shape / ({mean})"
    else:
        like[MEAN_PARAM[dist]] = mean
    return items, params, {outcome: like}


def spec_from_toml(doc: Mapping, *, path: Path | None = None, file: str | None = None
                   ) -> ModelSpec:
    """Validate a parsed TOML document (a dict) and return its :class:`ModelSpec`."""
    file = file or _label(path)
    if not isinstance(doc, Mapping):
        raise _err(file, None, "expected a TOML table at the top level.")
    for section in doc:
        if section not in SECTIONS:
            raise _err(file, section, f"unknown section [{section}]."
                                      f"{did_you_mean(section, SECTIONS)}"
                                      f" Sections: {['[' + s + ']' for s in SECTIONS]}.")
    model = doc.get("model", {})
    if not isinstance(model, dict):
        raise _err(file, "model", "[model] must be a table.")
    _check_keys(model, SECTIONS["model"], file, "model")
    for k in ("name", "description", "data"):
        if k in model and not isinstance(model[k], str):
            raise _err(file, f"model.{k}", f"expected a string, got {model[k]!r:.60}.")
    name = model.get("name") or (path.stem if path is not None else "model")
    description = model.get("description", "")
    if "formula" in model:
        for section in ("data", "parameters", "likelihood"):
            if section in doc:
                raise _err(file, section, f"[{section}] cannot be combined with model.formula; "
                                          "a formula declares data, parameters and likelihood. "
                                          "Remove one of them.")
        items, param_tab, like_tab = _formula_decls(model, file)
    else:
        for k in FORMULA_ONLY_KEYS:
            if k in model:
                raise _err(file, f"model.{k}", f"{k} only applies with model.formula = "
                                               "'y ~ ...'; in a [likelihood] model write it into "
                                               "the expressions.")
        for section in ("data", "parameters", "likelihood"):
            if section not in doc:
                raise _err(file, section, f"missing section [{section}] (or give model.formula "
                                          "= 'y ~ x1 + x2' with a family).")
        items = _parse_data(doc["data"], file)
        param_tab, like_tab = doc["parameters"], doc["likelihood"]
    data_names = {it.name: it for it in items}
    dims = {it.dim: it for it in items if it.dim is not None}
    params = _parse_parameters(param_tab, file, dims)
    known: dict[str, str] = {}
    for it in items:
        known[it.name] = "data"
    for p in params:
        if p.name in known:
            raise _err(file, p.key, f"{p.name!r} is both a [data] name and a parameter; rename "
                                    "one of them.")
        known[p.name] = "parameter"
    likes = _parse_likelihood(like_tab, file, data_names, known)
    used: dict[str, list[str]] = {}
    for lk in likes:
        used.setdefault(lk.observed, []).append(lk.key)
        for k, e in lk.params:
            if isinstance(e, Expression):
                for n in e.names:
                    used.setdefault(n, []).append(f"{lk.key}.{k}")
        if lk.name in data_names and lk.name != lk.observed:
            raise _err(file, lk.key, f"likelihood {lk.name!r} observes {lk.observed!r} but has "
                                     f"the name of another [data] entry; rename it.")
    unused = [p for p in params if p.name not in used]
    if unused:
        p = unused[0]
        raise _err(file, p.key, f"parameter {p.name!r} is not used by any likelihood "
                                "expression, so the data cannot determine it. Use it in "
                                "[likelihood] or remove it.")
    names = [lk.name for lk in likes]
    if len(set(names)) != len(names):  # pragma: no cover - TOML keys are unique
        raise _err(file, "likelihood", "duplicate likelihood names.")
    items = [replace(it, used_in=tuple(used.get(it.name, ()))) for it in items]
    priors = _parse_priors(doc.get("priors", {}), file, {p.name: p for p in params})
    default = model.get("data")
    return ModelSpec(name=str(name), description=str(description), path=path, priors=priors,
                     _file=file, _items=tuple(items), _params=tuple(params),
                     _likelihoods=tuple(likes), _default_data=default)


# ------------------------------------------------------------------ the spec
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
                 _default_data: str | None = None, _build=None, _build_takes_priors=False):
        self.name = name
        self.description = description
        self.path = path
        self.priors = dict(priors)
        self._file = _file
        self._items: tuple[DataItem, ...] = tuple(_items)
        self._params: tuple[ParamDecl, ...] = tuple(_params)
        self._likelihoods: tuple[LikelihoodDecl, ...] = tuple(_likelihoods)
        self._default_data = _default_data
        self._build = _build
        self._build_takes_priors = _build_takes_priors
        self._cache: OrderedDict = OrderedDict()

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
    def bind(self, data) -> BoundData:
        """Bind ``data`` to this model's data names (every check happens here).

        Raises
        ------
        DataError
        """
        if self.kind == "python":
            raise ModelFileError(f"{self._file!r} is a Python model file; its build(data) reads "
                                 "the table itself.")
        integer = frozenset(lk.observed for lk in self._likelihoods if lk.distribution.discrete)
        bound = bind(list(self._items), data, file=self._file, integer=integer)
        for it in self._items:
            if it.name == "exposure" and it.key == "model.exposure":
                bad = bound.arrays["exposure"] <= 0
                if bad.any():
                    raise DataError(f"model file {self._file!r}, key model.exposure: column "
                                    f"{it.columns[0]!r} must be positive (log exposure is the "
                                    f"offset); rows {np.flatnonzero(bad)[:5].tolist()} are not.")
        return bound

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
        key = bound.structure
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            model, containers = hit
            values = {containers[name]: arr for name, arr in bound.arrays.items()}
            pm.set_data(values, model=model, coords={OBS_DIM: np.arange(bound.n)})
            return model, bound.table
        model, containers = self._build_pm(bound, priors=None)
        self._cache[key] = (model, containers)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return model, bound.table

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
        for k, text in priors.items():
            if k not in names:
                raise ModelFileError(f"model file {self._file!r}: priors name unknown parameter "
                                     f"{k!r}.{did_you_mean(k, names)} Parameters: "
                                     f"{sorted(names)}.")
            parse_distribution_call(text, where=f"model file {self._file!r}, prior of {k!r}")
        model, _ = self._build_pm(self.bind(data), priors=priors)
        return model

    # --------------------------------------------------------------- building
    def _container_names(self, bound: BoundData) -> dict[str, str]:
        taken = {self._dim(d) for d in bound.coords} | {OBS_DIM} | {p.name for p in self._params}
        taken |= {lk.name for lk in self._likelihoods}
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
                    env[it.name] = pm.Data(containers[it.name], arr, dims=dims)
                for p in self._params:
                    prior = (priors or {}).get(p.name)
                    p = replace(p, dims=tuple(self._dim(d) for d in p.dims))
                    rv = _make_param(p, prior, file)
                    env[p.name] = _pad_reference(rv, p.dims, ref_index)
                for lk in self._likelihoods:
                    kwargs = {}
                    for k, e in lk.params:
                        where = _where(file, f"{lk.key}.{k}")
                        if isinstance(e, Expression):
                            try:
                                kwargs[k] = e.to_tensor(env, index_names=index_names)
                            except MLEError:
                                raise
                            except Exception as err:  # noqa: BLE001 - PyTensor's many errors
                                raise ModelFileError(f"{where}: cannot build {e.text!r}: "
                                                     f"{_first_line(err)}") from None
                        else:
                            kwargs[k] = e
                    obs = env[lk.observed]
                    dims = ((OBS_DIM,) if obs.ndim == 1
                            else (OBS_DIM, self._dim(self._item(lk.observed).dim)))
                    try:
                        lk.distribution.cls(lk.name, **kwargs, observed=obs, dims=dims)
                    except MLEError:
                        raise
                    except Exception as err:  # noqa: BLE001 - PyMC's many errors, all ours
                        raise ModelFileError(f"{_where(file, lk.key)}: cannot build "
                                             f"{lk.distribution.name}({', '.join(kwargs)}) "
                                             f"observing {lk.observed!r}: {_first_line(err)}"
                                             ) from None
        except MLEError:
            raise
        except Exception as err:  # noqa: BLE001 - anything else while building is the file's
            raise ModelFileError(f"model file {file!r}: cannot build the model: "
                                 f"{_first_line(err)}") from None
        return model, containers

    def _dim(self, dim: str) -> str:
        """PyMC name of a dim: the data name, or ``<name>_dim`` if an observed variable has it."""
        return f"{dim}_dim" if any(lk.name == dim for lk in self._likelihoods) else dim

    def _item(self, name: str) -> DataItem:
        return next(it for it in self._items if it.name == name)

    def _call_build(self, table, priors):
        try:
            model = self._build(table, priors=priors) if priors is not None else self._build(table)
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
                                 f"{type(err).__name__}: {_first_line(err)}") from None
        if not isinstance(model, pm.Model):
            raise ModelFileError(f"Python model file {self._file!r}: build(data) must return a "
                                 f"pymc.Model, got {type(model).__name__}.")
        return model


def _first_line(err: BaseException) -> str:
    s = str(err).strip()
    return s.splitlines()[0] if s else type(err).__name__


def _make_param(p: ParamDecl, prior: str | None, file: str):
    dims = p.dims or None
    shape = p.shape
    if prior is not None:
        return make_prior(p.name, prior, dims=dims, shape=shape, lower=p.lower, upper=p.upper,
                          where=f"model file {file!r}, key priors.{p.name}")
    kw: dict[str, Any] = {"dims": dims} if dims else ({"shape": shape} if shape else {})
    lo, hi = p.lower, p.upper
    start = p.start
    if lo is not None and hi is not None:
        return pm.Uniform(p.name, lo, hi, initval=_initval(start, p, (lo + hi) / 2), **kw)
    if lo == 0.0:
        return pm.HalfFlat(p.name, initval=_initval(start, p, None), **kw)
    if lo is not None or hi is not None:
        tr = pm.distributions.transforms.Interval(lower=lo, upper=hi)
        default = lo + 1.0 if lo is not None else hi - 1.0
        return pm.Flat(p.name, transform=tr, initval=_initval(start, p, default), **kw)
    return pm.Flat(p.name, initval=_initval(start, p, None), **kw)


def _initval(start, p: ParamDecl, default):
    return start if start is not None else default


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


def make_prior(name: str, text: str, *, dims=None, shape=None, lower: float | None = None,
               upper: float | None = None, where: str = ""):
    """Create a prior from a string such as ``"Normal(0, 2.5)"`` in the current ``pm.Model``.

    The string is parsed by the expression whitelist (never evaluated). When ``lower``/``upper``
    are given (a parameter declared with a bounded support) and the distribution puts mass
    outside them, it is truncated there (``"Normal(0, 1)"`` with ``lower=0`` is a half-normal).

    Parameters
    ----------
    name : str
        Variable name.
    text : str
        ``"Dist(args...)"`` with constant arguments, e.g. ``"HalfNormal(1)"``,
        ``"StudentT(nu=3, mu=0, sigma=2)"``.
    dims, shape : optional
        Passed to PyMC.
    lower, upper : float, optional
        Support of the parameter.

    Returns
    -------
    TensorVariable
        The random variable.

    Raises
    ------
    ModelFileError
        Unknown distribution or parameter, names in arguments, invalid syntax.

    Examples
    --------
    >>> import pymc as pm
    >>> with pm.Model() as m:
    ...     beta = make_prior("beta", "Normal(0, 2.5)", shape=3)
    >>> m["beta"].type.shape
    (3,)
    """
    where = where or f"prior of {name!r}"
    call = parse_distribution_call(text, where=where)
    try:
        args, kwargs = call.evaluate()
    except MLEError:
        raise
    except Exception as err:  # noqa: BLE001 - PyTensor errors on odd constants
        raise ModelFileError(f"{where}: cannot evaluate {text!r}: {_first_line(err)}") from None
    kw: dict[str, Any] = {}
    if dims:
        kw["dims"] = dims
    elif shape:
        kw["shape"] = shape
    cls = call.info.cls
    try:
        if lower is not None or upper is not None:
            base = cls.dist(*args, **kwargs)
            outside_lo = lower is not None and _has_mass(base, lower - 1e-3 * max(1, abs(lower)))
            outside_hi = upper is not None and _has_mass(base, upper + 1e-3 * max(1, abs(upper)))
            if outside_lo or outside_hi:
                return pm.Truncated(name, base, lower=lower if outside_lo else None,
                                    upper=upper if outside_hi else None, **kw)
        return cls(name, *args, **kwargs, **kw)
    except MLEError:
        raise
    except Exception as err:  # noqa: BLE001 - PyMC's errors for bad parameters
        raise ModelFileError(f"{where}: cannot create prior {text!r}: {_first_line(err)}"
                             ) from None


def _has_mass(dist, value: float) -> bool:
    lp = np.asarray(pm.logp(dist, value).eval())
    return bool(np.any(np.isfinite(lp)))


# ------------------------------------------------------------------ loading
def _bundled_dir() -> Path:
    return Path(os.fspath(importlib.resources.files("mle_ppl.models")))


def bundled_models() -> dict[str, Path]:
    """Bundled model files by name (``.toml`` and ``.py`` files of ``mle_ppl.models``)."""
    root = _bundled_dir()
    out = {}
    for p in sorted(root.iterdir()):
        if p.suffix in (".toml", ".py") and not p.name.startswith("_") and p.is_file():
            out.setdefault(p.stem, p)
    return out


def list_models() -> list[tuple[str, str]]:
    """Bundled models as ``(name, one-line description)`` pairs, sorted by name.

    Examples
    --------
    >>> names = [n for n, _ in list_models()]
    >>> "linear_regression" in names
    True
    """
    out = []
    for name, path in bundled_models().items():
        spec = load_model(path)
        out.append((name, spec.description.strip().splitlines()[0] if spec.description else ""))
    return out


def loads_model(text: str, *, name: str = "model", base: Path | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from TOML text (``base``: folder for a relative ``[model] data``).

    Examples
    --------
    >>> spec = loads_model('''
    ... [data]
    ... y = "y"
    ... [parameters]
    ... mu = {}
    ... sigma = { lower = 0 }
    ... [likelihood]
    ... y = { distribution = "Normal", mu = "mu", sigma = "sigma" }
    ... ''')
    >>> spec.parameter_names
    ('mu', 'sigma')
    """
    file = f"<{name}>"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _err(file, None, f"invalid TOML: {err}") from None
    except (TypeError, RecursionError, MemoryError) as err:
        raise _err(file, None, f"invalid TOML: {type(err).__name__}") from None
    path = (base / f"{name}.toml") if base is not None else None
    spec = spec_from_toml(doc, path=path, file=file)
    model = doc.get("model")
    if not (isinstance(model, dict) and model.get("name")):
        spec.name = name
    return spec


def _load_toml(path: Path) -> ModelSpec:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"cannot read model file {str(path)!r}: {err.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelFileError(f"model file {path.name!r} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as err:
        raise ModelFileError(f"model file {path.name!r}: invalid TOML: {err}") from None
    return spec_from_toml(doc, path=path, file=path.name)


def _load_python(path: Path) -> ModelSpec:
    modname = f"mle_ppl_modelfile_{abs(hash(str(path.resolve())))}"
    try:
        ispec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(ispec)
        sys.modules[modname] = module
        try:
            ispec.loader.exec_module(module)
        finally:
            sys.modules.pop(modname, None)
    except MLEError:
        raise
    except SyntaxError as err:
        raise ModelFileError(f"Python model file {path.name!r}: syntax error at line "
                             f"{err.lineno}: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - user code: report it without a traceback
        raise ModelFileError(f"Python model file {path.name!r} failed to load: "
                             f"{type(err).__name__}: {_first_line(err)}") from None
    build = getattr(module, "build", None)
    if not callable(build):
        raise ModelFileError(f"Python model file {path.name!r} must define build(data) -> "
                             "pymc.Model (data: the bound pandas DataFrame).")
    try:
        takes_priors = "priors" in inspect.signature(build).parameters
    except (TypeError, ValueError):
        takes_priors = False
    doc = (module.__doc__ or "").strip()
    description = getattr(module, "DESCRIPTION", None) or doc
    default = getattr(module, "DATA", None)
    priors = getattr(module, "PRIORS", {}) or {}
    if not isinstance(priors, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in priors.items()):
        raise ModelFileError(f"Python model file {path.name!r}: PRIORS must be a dict of "
                             "name -> 'Distribution(...)' strings.")
    for k, v in priors.items():
        parse_distribution_call(v, where=f"Python model file {path.name!r}, PRIORS[{k!r}]")
    return ModelSpec(name=str(getattr(module, "NAME", path.stem)), description=str(description),
                     path=path, priors=priors, _file=path.name,
                     _default_data=None if default is None else str(default), _build=build,
                     _build_takes_priors=takes_priors)


def load_model(path_or_name: str | PathLike | ModelSpec) -> ModelSpec:
    """Load a model file (``.toml`` or ``.py``) or a bundled model by name.

    Parameters
    ----------
    path_or_name : str or path
        A path to a ``.toml``/``.py`` model file, or the name of a bundled model (see
        :func:`list_models`).

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelFileError
        Unknown name (with the bundled names and a did-you-mean), missing file, or an invalid
        model file (the message names the file and the key path).

    Examples
    --------
    >>> spec = load_model("linear_regression")
    >>> spec.name
    'linear_regression'
    """
    if isinstance(path_or_name, ModelSpec):
        return path_or_name
    if not isinstance(path_or_name, str | PathLike):
        raise ModelFileError(f"expected a model file path or bundled model name, got "
                             f"{type(path_or_name).__name__}.")
    path = Path(path_or_name)
    text = str(path_or_name)
    looks_like_path = path.suffix in (".toml", ".py") or os.sep in text or "/" in text
    if path.is_file():
        if path.suffix == ".py":
            return _load_python(path)
        if path.suffix == ".toml":
            return _load_toml(path)
        raise ModelFileError(f"model file {text!r}: unknown kind {path.suffix!r}; expected a "
                             ".toml or .py file, or a bundled model name.")
    bundled = bundled_models()
    if not looks_like_path and text in bundled:
        return load_model(bundled[text])
    if path.is_dir():
        raise ModelFileError(f"{text!r} is a directory, not a model file.")
    names = sorted(bundled)
    hint = did_you_mean(path.stem if looks_like_path else text, names)
    what = "model file does not exist" if looks_like_path else "unknown model"
    raise ModelFileError(f"{what}: {text!r}.{hint} Give a path to a .toml/.py model file or a "
                         f"bundled model name: {', '.join(names)}.")


__all__ = ["ModelSpec", "list_models", "load_model", "loads_model", "make_prior"]
