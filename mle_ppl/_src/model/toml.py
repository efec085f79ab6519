"""TOML model files: parse and validate a document into declarations (data, parameters, likelihood).

A TOML model file (docs/model-files.md) is checked completely here, before any data are
read or any PyMC object is built: sections, keys, distributions and their parameters, expressions
(:mod:`.expressions`, never evaluated), names, unused parameters, priors. :func:`parse_toml`
returns a :class:`ModelDecl`; :class:`~mle_ppl.ModelSpec` (:mod:`.spec`) builds the
``pm.Model`` from it, and :mod:`.library` reads files into specs. A formula model
(``[model] formula = "y ~ x"``) is expanded here into the same declarations.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mle_ppl._src.errors import ModelFileError, did_you_mean
from mle_ppl._src.model.data import DataItem
from mle_ppl._src.model.expressions import (
    FUNCTIONS,
    DistributionInfo,
    Expression,
    get_distribution,
    parse_distribution_call,
    parse_expression,
)
from mle_ppl._src.model.literals import int_text
from mle_ppl._src.model.names import normalize
from mle_ppl._src.model.random import RandomDecl, parse_random

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
    "random": None,
}
DATA_KEYS = ("column", "columns", "levels", "reference", "categorical", "nested_in")
PARAMETER_KEYS = ("dims", "lower", "upper", "shape", "start")
LIKELIHOOD_KEYS = ("distribution", "observed")
FORMULA_ONLY_KEYS = ("family", "link", "offset", "exposure", "trials")

#: Names a data entry or parameter may not take.
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


@dataclass(frozen=True)
class ModelDecl:
    """A validated TOML model file: what :class:`~mle_ppl.ModelSpec` needs to build the model."""

    name: str
    description: str
    path: Path | None
    file: str  #: the file's label in messages
    priors: dict[str, str]
    items: tuple[DataItem, ...]
    params: tuple[ParamDecl, ...]
    likelihoods: tuple[LikelihoodDecl, ...]
    default_data: str | None  #: ``[model] data``
    randoms: tuple[RandomDecl, ...] = ()  #: ``[random]``: effects integrated out by the engine


def _label(path: Path | None, fallback: str = "<string>") -> str:
    return path.name if path is not None else fallback


def _err(file: str, key: str | None, msg: str) -> ModelFileError:
    where = f"model file {file!r}" + (f", key {key}" if key else "")
    return ModelFileError(f"{where}: {msg}")


def key_where(file: str, key: str) -> str:
    """``"model file 'f', key k"``: where an expression or distribution sits, for messages."""
    return f"model file {file!r}, key {key}"


#: Short, recursion-safe reprs of user values for messages (a list nested 900 deep, a string
#: of a million characters).
_REPR = reprlib.Repr(maxlevel=3, maxstring=60, maxother=60, maxlist=6, maxdict=6)


def _show(value) -> str:
    if type(value) is int and abs(value) > 10**20:
        return f"the integer {int_text(value)}"
    return _REPR.repr(value)


def _is_number(v) -> bool:
    return type(v) in (int, float)


def _number(v, file: str, key: str) -> float:
    """A TOML number as a finite float (an integer of 400 digits does not fit one)."""
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            raise _err(file, key, f"the integer {int_text(v)} is too large for a number here "
                                  "(floats end at 1.8e308).") from None
    if type(v) is float and math.isfinite(v):
        return v
    raise _err(file, key, f"expected a finite number, got {_show(v)}.")


def _normalize_table(section: Any, file: str, key: str) -> Any:
    """NFKC-normalised keys (µ is μ, as in Python); two keys that become one are refused."""
    if not isinstance(section, dict):
        return section
    out: dict = {}
    for k, v in section.items():
        nk = normalize(k)
        if nk in out:
            raise _err(file, f"{key}.{nk}", f"{nk!r} is declared twice (as "
                                            f"{[x for x in section if normalize(x) == nk]}; "
                                            "Python reads them as one name).")
        out[nk] = v
    return out


def _check_name(name: Any, file: str, key: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
        raise _err(file, key, f"{_show(name)} is not a valid name: use letters, digits and _ "
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
    raise _err(file, key, f"expected a string or a non-empty list of strings, got {_show(v)}.")


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
            categorical = ("levels" in v or "reference" in v or v.get("categorical", False)
                           or "nested_in" in v)
            nested_in = v.get("nested_in")
            if nested_in is not None and not isinstance(nested_in, str):
                raise _err(file, f"{key}.nested_in", f"expected a column name, got "
                                                     f"{nested_in!r:.60}.")
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
                raise _err(file, f"{key}.column", f"expected a column name, got {_show(col)}.")
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
                                  reference=ref, dim=name, nested_in=nested_in))
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
                                  f"{{ lower = 0 }}, got {_show(v)}.")
        _check_keys(v, PARAMETER_KEYS, file, key)
        pdims: tuple[str, ...] = ()
        if "dims" in v:
            pdims = tuple(normalize(d) for d in _as_str_list(v["dims"], file, f"{key}.dims"))
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
                                                 f"got {_show(v['shape'])}.")
            if pdims:
                raise _err(file, key, "give dims or shape, not both.")
            shape = tuple(s)
        bounds = {}
        for b in ("lower", "upper", "start"):
            if b in v:
                bounds[b] = _number(v[b], file, f"{key}.{b}")
        lo, hi = bounds.get("lower"), bounds.get("upper")
        if lo is not None and hi is not None and not lo < hi:
            raise _err(file, key, f"lower = {lo} must be below upper = {hi}.")
        st = bounds.get("start")
        if st is not None and ((lo is not None and st <= lo) or (hi is not None and st >= hi)):
            support = (f"({'-inf' if lo is None else f'{lo:g}'}, "
                       f"{'inf' if hi is None else f'{hi:g}'})")
            raise _err(file, f"{key}.start", f"start = {st:g} is outside the support of {name}, "
                                             f"{support}; give a value strictly inside.")
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
        info = get_distribution(v["distribution"], where=key_where(file, f"{key}.distribution"))
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
            raise _err(file, f"{key}.observed", f"expected a [data] name, got {_show(observed)}.")
        observed = normalize(observed)
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
            where = key_where(file, f"{key}.{k}")
            if isinstance(x, str):
                params.append((k, parse_expression(x, known=known, where=where)))
            elif _is_number(x):
                params.append((k, _number(x, file, f"{key}.{k}")))
            else:
                raise _err(file, f"{key}.{k}", f"expected an expression string or a number, "
                                               f"got {_show(x)}.")
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
            raise _err(file, key, f"expected a string such as 'Normal(0, 2.5)', got {_show(text)}.")
        parse_distribution_call(text, where=key_where(file, key))
        out[name] = text
    return out


def _formula_decls(model: dict, file: str):
    """Declarations of a formula model: [model] formula, family, link, offset, exposure, trials."""
    from mle_ppl._src.model.formula import FAMILIES, LINKS, MEAN_PARAM, check_rhs, split_formula
    from mle_ppl._src.model.formula_random import random_decls, split_random

    where = key_where(file, "model.formula")
    lhs, rhs = split_formula(model["formula"], where=where, check=False)
    rhs, terms = split_random(rhs, where=where)
    check_rhs(rhs, where=where)
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
            raise _err(file, f"model.{k}", f"expected a column name, got {_show(model[k])}.")
    outcome = normalize(lhs) if lhs.isidentifier() and normalize(lhs) not in _RESERVED else "y"
    if outcome in ("X", "beta", "offset", "exposure", "trials", *family.extra):
        outcome = f"{outcome}_obs"
    items = [DataItem("y", "model.formula", "vector", (lhs,)),
             DataItem("X", "model.formula", "design", dim="coef", formula=rhs)]
    eta = "X @ beta"
    if "offset" in model:
        items.append(DataItem("offset", "model.offset", "vector", (model["offset"],)))
        eta += " + offset"
    if "exposure" in model:
        items.append(DataItem("exposure", "model.exposure", "vector", (model["exposure"],),
                              positive=True))
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
    params = {"beta": {"dims": "coef"}}
    random: dict | None = None
    if terms:
        taken = {outcome, "y", "X", "beta", "offset", "exposure", "trials", *family.extra}
        r_items, r_params, random, r_eta = random_decls(terms, taken, where=where)
        items += r_items
        params.update(r_params)
        eta = " + ".join([eta, *r_eta])
    mean = LINKS[link].format(eta=eta)
    for pname, (pspec, kw, _) in family.extra.items():
        params[pname] = dict(pspec)
        like[kw] = pname
    if family_name == "gamma":
        like["beta"] = f"shape / ({mean})"
    else:
        like[MEAN_PARAM[dist]] = mean
    return items, params, {outcome: like}, random


def parse_toml(doc: Mapping, *, path: Path | None = None, file: str | None = None) -> ModelDecl:
    """Validate a parsed TOML document (a dict) and return its :class:`ModelDecl`."""
    file = file or _label(path)
    if not isinstance(doc, Mapping):
        raise _err(file, None, "expected a TOML table at the top level.")
    for section in doc:
        if section not in SECTIONS:
            raise _err(file, section, f"unknown section [{section}]."
                                      f"{did_you_mean(section, SECTIONS)}"
                                      f" Sections: {['[' + s + ']' for s in SECTIONS]}.")
    # names as Python reads them (NFKC: µ is μ), so that expressions find them
    doc = {sec: _normalize_table(v, file, sec) if sec in ("data", "parameters", "likelihood",
                                                          "priors", "random") else v
           for sec, v in doc.items()}
    model = doc.get("model", {})
    if not isinstance(model, dict):
        raise _err(file, "model", "[model] must be a table.")
    _check_keys(model, SECTIONS["model"], file, "model")
    for k in ("name", "description", "data"):
        if k in model and not isinstance(model[k], str):
            raise _err(file, f"model.{k}", f"expected a string, got {_show(model[k])}.")
    name = model.get("name") or (path.stem if path is not None else "model")
    description = model.get("description", "")
    if "formula" in model:
        for section in ("data", "parameters", "likelihood", "random"):
            if section in doc:
                raise _err(file, section, f"[{section}] cannot be combined with model.formula; "
                                          "a formula declares data, parameters and likelihood "
                                          "(random effects as (1 | g) terms). Remove one of them.")
        items, param_tab, like_tab, random_tab = _formula_decls(model, file)
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
        random_tab = doc.get("random")
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
    randoms = (parse_random(random_tab, file, data_names, {p.name: p for p in params})
               if random_tab is not None else [])
    for r in randoms:
        known[r.name] = "random effect"
    for it in items:
        if it.nested_in is not None and it.nested_in == it.columns[0]:
            raise _err(file, f"{it.key}.nested_in", f"column {it.columns[0]!r} cannot be nested "
                                                    "in itself.")
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
    for r in reversed(randoms):  # a later effect may use an earlier one as its mean
        if r.name not in used:
            raise _err(file, r.key, f"random effect {r.name!r} is not used by any likelihood "
                                    "expression, so nothing observed depends on it (it would "
                                    f"integrate to 1). Use it, e.g. mu = '... + {r.name}"
                                    f"[{r.group}]', or remove it.")
        for n in r.names:
            used.setdefault(n, []).append(r.key)
    unused = [p for p in params if p.name not in used]
    if unused:
        p = unused[0]
        raise _err(file, p.key, f"parameter {p.name!r} is not used by any likelihood "
                                "expression, so the data cannot determine it. Use it in "
                                "[likelihood] or remove it.")
    names = [lk.name for lk in likes]
    if len(set(names)) != len(names):  # pragma: no cover - TOML keys are unique
        raise _err(file, "likelihood", "duplicate likelihood names.")
    discrete = {lk.observed for lk in likes if lk.distribution.discrete}
    groups = {r.group for r in randoms}
    items = [replace(it, used_in=tuple(used.get(it.name, ())), integer=it.name in discrete,
                     grouping=it.name in groups) for it in items]
    priors = _parse_priors(doc.get("priors", {}), file, {p.name: p for p in params})
    return ModelDecl(name=str(name), description=str(description), path=path, file=file,
                     priors=priors, items=tuple(items), params=tuple(params),
                     likelihoods=tuple(likes), default_data=model.get("data"),
                     randoms=tuple(randoms))


