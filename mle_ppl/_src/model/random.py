"""Random effects in TOML model files: the ``[random]`` section, validated and built.

``[random] u = { distribution = "Normal", mu = 0, sigma = "sd_u", dims = "g" }`` declares one
effect per level of the grouping column behind the categorical ``[data]`` name ``g``; likelihood
expressions use it as ``u[g]``. Correlated effects (intercept and slope per group) are
``distribution = "MvNormal"`` with a list of two scales and a correlation parameter:
the covariance is ``diag(sigma) [[1, corr], [corr, 1]] diag(sigma)``. Each hyperparameter
expression must use a free parameter (else the distribution is a prior, not a random effect);
the engine integrates the effects out (Laplace, README "Random effects").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mle_ppl._src.errors import ModelFileError, did_you_mean
from mle_ppl._src.model.data import DataItem
from mle_ppl._src.model.expressions import (
    DistributionInfo,
    Expression,
    get_distribution,
    parse_expression,
)

#: Keys of every ``[random]`` entry (a scalar distribution also takes its own parameters).
RANDOM_KEYS = ("distribution", "dims")
#: Keys of a ``distribution = "MvNormal"`` entry (correlated effects), besides RANDOM_KEYS.
MVNORMAL_KEYS = ("mu", "sigma", "corr", "effects")


@dataclass(frozen=True)
class RandomDecl:
    """A random effect: one value (or one vector of correlated values) per group level."""

    name: str
    key: str
    distribution: DistributionInfo
    group: str  #: the categorical [data] name whose levels index the effect (its dim)
    #: distribution parameters: a number, an expression, or (MvNormal sigma) a tuple of them
    params: tuple[tuple[str, Any], ...]
    effect_dim: str | None = None  #: MvNormal: the second dim (one entry per effect)
    effects: tuple[str, ...] | None = None  #: MvNormal: labels of a new effect dim

    @property
    def names(self) -> frozenset[str]:
        """Names used by the hyperparameter expressions."""
        out: set[str] = set()
        for _, v in self.params:
            for e in (v if isinstance(v, tuple) else (v,)):
                if isinstance(e, Expression):
                    out |= e.names
        return frozenset(out)

    @property
    def correlated(self) -> bool:
        return self.distribution.name == "MvNormal"


def _err(file: str, key: str, msg: str) -> ModelFileError:
    return ModelFileError(f"model file {file!r}, key {key}: {msg}")


def _value(x, file: str, key: str, known: Mapping[str, str]):
    where = f"model file {file!r}, key {key}"
    if isinstance(x, str):
        return parse_expression(x, known=known, where=where)
    if type(x) in (int, float) and math.isfinite(x):
        return float(x)
    raise _err(file, key, f"expected an expression string or a number, got {x!r:.60}.")


def parse_random(section: Any, file: str, items: Mapping[str, DataItem],
                 params: Mapping[str, Any]) -> list[RandomDecl]:
    """Validate the ``[random]`` table: distributions, grouping dims, hyperparameters.

    ``items``: the [data] items by name; ``params``: the declared parameters by name.
    """
    if not isinstance(section, dict):
        raise _err(file, "random", "[random] must be a table of name = { distribution = ..., "
                                   "dims = '<categorical data name>', ... }.")
    out: list[RandomDecl] = []
    for name, v in section.items():
        key = f"random.{name}"
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            raise _err(file, key, f"{name!r} is not a valid name: use letters, digits and _.")
        if name in items or name in params:
            what = "a [data] name" if name in items else "a parameter"
            raise _err(file, key, f"{name!r} is already {what}; rename the random effect.")
        if not isinstance(v, dict):
            raise _err(file, key, "expected a table { distribution = 'Normal', mu = 0, sigma = "
                                  "'sd_u', dims = '<categorical data name>' }.")
        if "distribution" not in v:
            raise _err(file, key, "missing key 'distribution' (e.g. 'Normal', or 'MvNormal' for "
                                  "correlated effects).")
        info = get_distribution(v["distribution"],
                                where=f"model file {file!r}, key {key}.distribution")
        if info.name in ("Flat", "HalfFlat", "Uniform"):
            raise _err(file, f"{key}.distribution", f"{info.name} is flat: a random effect needs "
                       "a proper distribution whose parameters are estimated (e.g. Normal with "
                       "sigma = 'sd_u'). Declare a flat quantity in [parameters].")
        if info.discrete:
            raise _err(file, f"{key}.distribution", f"{info.name} is discrete; the Laplace "
                       "approximation integrates continuous random effects only.")
        group, effect_dim = _dims(v, key, file, items)
        # hyperparameters may use parameters and earlier random effects, never data
        known = {p: "parameter" for p in params} | {r.name: "random effect" for r in out}
        if info.name == "MvNormal":
            decl = _mvnormal(name, key, v, info, group, effect_dim, file, known, items)
        else:
            if effect_dim is not None:
                raise _err(file, f"{key}.dims", f"a {info.name} random effect takes one dim "
                           f"(the grouping name); use distribution = 'MvNormal' for correlated "
                           "effects with two dims.")
            pkeys = [k for k in v if k not in RANDOM_KEYS]
            for k in pkeys:
                if k not in info.params:
                    raise _err(file, f"{key}.{k}", f"{info.name} has no parameter {k!r}."
                               f"{did_you_mean(k, info.params)} Its parameters are "
                               f"{list(info.params)}; other keys allowed here: "
                               f"{list(RANDOM_KEYS)}.")
            ps = tuple((k, _value(v[k], file, f"{key}.{k}", known)) for k in pkeys)
            decl = RandomDecl(name, key, info, group, ps)
        if not (decl.names & (set(params) | {r.name for r in out})):
            given = ", ".join(f"{k} = {v[k]!r}" for k, _ in decl.params) or "its defaults"
            raise _err(file, key, f"the parameters of {name!r} ({given}) are all constants: "
                       "that is a prior, not a random effect (mle-ppl estimates the variance "
                       "of a random effect). Use a parameter for its scale, e.g. sigma = "
                       f"'sd_{name}' with sd_{name} = {{ lower = 0 }} in [parameters].")
        out.append(decl)
    return out


def _dims(v: Mapping, key: str, file: str,
          items: Mapping[str, DataItem]) -> tuple[str, str | None]:
    if "dims" not in v:
        cats = [n for n, it in items.items() if it.kind == "categorical"]
        raise _err(file, key, "missing key 'dims': the categorical [data] name whose levels are "
                              f"the groups, e.g. dims = 'g' with g = {{ column = 'group', "
                              f"categorical = true }} in [data]. Categorical names: {cats}.")
    d = v["dims"]
    dims = [d] if isinstance(d, str) else d
    if (not isinstance(dims, list) or not 1 <= len(dims) <= 2
            or not all(isinstance(x, str) for x in dims)):
        raise _err(file, f"{key}.dims", f"expected a categorical [data] name, or [group, effect] "
                                        f"for MvNormal; got {d!r:.60}.")
    group = dims[0]
    it = items.get(group)
    if it is None or it.kind != "categorical":
        cats = [n for n, x in items.items() if x.kind == "categorical"]
        hint = did_you_mean(group, cats)
        what = "is not a [data] name" if it is None else "is not categorical"
        raise _err(file, f"{key}.dims", f"the grouping dim {group!r} {what}.{hint} A random "
                   f"effect's first dim is a categorical [data] name, e.g. {group} = {{ column "
                   f"= '{group}', categorical = true }}. Categorical names: {cats}.")
    if it.reference is not None:
        raise _err(file, f"{key}.dims", f"the grouping name {group!r} has a reference level "
                   f"({it.reference!r}); a random effect has one value per level. Remove "
                   "reference from its [data] entry.")
    return group, (dims[1] if len(dims) == 2 else None)


def _mvnormal(name, key, v, info, group, effect_dim, file, known, items) -> RandomDecl:
    for k in v:
        if k not in RANDOM_KEYS + MVNORMAL_KEYS:
            raise _err(file, f"{key}.{k}", f"unknown key {k!r} for correlated effects."
                       f"{did_you_mean(k, RANDOM_KEYS + MVNORMAL_KEYS)} Keys: "
                       f"{list(RANDOM_KEYS + MVNORMAL_KEYS)} (the covariance is "
                       "diag(sigma) [[1, corr], [corr, 1]] diag(sigma)).")
    for k in ("sigma", "corr"):
        if k not in v:
            raise _err(file, key, f"missing key {k!r}: correlated effects take sigma = ['sd_a', "
                                  "'sd_b'] (one scale per effect) and corr = 'rho' (a parameter "
                                  "with lower = -1, upper = 1).")
    if effect_dim is None:
        raise _err(file, f"{key}.dims", "MvNormal effects have two dims: dims = [group, effect], "
                   "e.g. ['g', 'effect'] with effects = ['intercept', 'slope'].")
    effects = None
    if "effects" in v:
        e = v["effects"]
        if (not isinstance(e, list) or len(e) != 2 or not all(isinstance(x, str) for x in e)
                or len(set(e)) != 2):
            raise _err(file, f"{key}.effects", f"expected two distinct labels, e.g. "
                                               f"['intercept', 'slope']; got {e!r:.60}.")
        if effect_dim in items:
            raise _err(file, f"{key}.effects", f"the effect dim {effect_dim!r} is a [data] name "
                       "with its own labels; remove effects or rename the dim.")
        effects = tuple(e)
    elif effect_dim not in {it.dim for it in items.values()}:
        raise _err(file, f"{key}.dims", f"the effect dim {effect_dim!r} is not a [data] dim; "
                   "give its two labels with effects = ['intercept', 'slope'].")
    sig = v["sigma"]
    if isinstance(sig, list):
        if len(sig) != 2:
            raise _err(file, f"{key}.sigma", f"expected two scales (one per effect), got "
                                             f"{len(sig)}.")
        sigma = tuple(_value(s, file, f"{key}.sigma", known) for s in sig)
    else:
        sigma = _value(sig, file, f"{key}.sigma", known)
    ps = [("sigma", sigma), ("corr", _value(v["corr"], file, f"{key}.corr", known))]
    if "mu" in v:
        ps.insert(0, ("mu", _value(v["mu"], file, f"{key}.mu", known)))
    return RandomDecl(name, key, info, group, tuple(ps), effect_dim, effects)


def build_random(r: RandomDecl, env: Mapping[str, Any], dims: tuple[str, ...], where: str):
    """Create random effect ``r`` in the current ``pm.Model`` (``dims``: its PyMC dims)."""
    import pymc as pm
    import pytensor.tensor as pt

    def tensor(v, k):
        if isinstance(v, Expression):
            return v.to_tensor(env)
        if isinstance(v, tuple):
            return pt.stack([pt.as_tensor_variable(tensor(e, k)) for e in v])
        return v

    kwargs = {k: tensor(v, k) for k, v in r.params}
    if not r.correlated:
        return r.distribution.cls(r.name, **kwargs, dims=dims)
    sd = pt.as_tensor_variable(kwargs["sigma"])
    if sd.ndim != 1 or sd.type.shape[0] not in (None, 2):
        raise ModelFileError(f"{where}.sigma: expected two scales (a list, or a parameter with "
                             f"a two-level dim), got a value of shape {sd.type.shape}.")
    rho = pt.as_tensor_variable(kwargs["corr"])
    if rho.ndim != 0:
        raise ModelFileError(f"{where}.corr: expected a scalar correlation.")
    zero = pt.zeros_like(sd[0])
    chol = pt.stack([pt.stack([sd[0], zero]),
                     pt.stack([rho * sd[1], pt.sqrt(1.0 - rho**2) * sd[1]])])
    mu = kwargs.get("mu", 0.0)
    mu = pt.zeros(2) + mu
    return pm.MvNormal(r.name, mu=mu, chol=chol, dims=dims)
