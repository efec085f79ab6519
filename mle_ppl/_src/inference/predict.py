"""Predictions from a fit on new data: the mean with delta-method intervals, simulated responses.

New data go into the model's ``pm.Data`` containers with ``pm.set_data`` (the compiled functions
read them: nothing is recompiled per call) and the containers are restored afterwards.

- ``kind="mean"``: ``E[y | x, theta_hat]`` of each observed variable (PyMC's ``mean`` of its
  distribution), with a standard error from the delta method ``sqrt(g' C g)`` (``g`` the gradient
  of the mean w.r.t. the unconstrained parameters, ``C`` the inverse observed information) and
  a Wald interval on the scale of the mean.
- ``kind="response"``: draws of new outcomes ``y ~ p(y | x, theta)``, with ``theta`` drawn from
  the normal approximation on the unconstrained scale (``parameter_uncertainty=True``, so σ stays
  positive) or fixed at the MLE; the interval is the central quantile range of the draws.

Which data are needed. For a model file, ``new_data`` is a table with the columns the ``[data]``
section names (the outcome column may be missing). For a ``pm.Model``, ``new_data`` maps
container names (``pm.Data``) to arrays; every container whose first axis has one entry per
observation must be given (the outcome container, if any, may be omitted); other containers keep
their values.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
from pymc.pytensorf import join_nonshared_inputs
from pytensor.tensor.type_other import NoneConst
from scipy import stats

from mle_ppl._src.engine.likelihood import _compile
from mle_ppl._src.errors import DataError, MLEError, did_you_mean
from mle_ppl._src.model.data import suggest

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate
    from mle_ppl._src.engine.likelihood import Likelihood

#: The one registry of prediction kinds.
KINDS = {"mean": "E[y | x] at the MLE, delta-method intervals",
         "response": "simulated new outcomes, predictive intervals"}

_MEAN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SIM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------- compiled pieces
def _unsized(rv, rng=None):
    """The observed variable's distribution with its size dropped (shape from the parameters)."""
    node = rv.owner
    rng_in, _size, *params = node.inputs
    return node.op, (rng if rng is not None else rng_in), params


def _joined(lik: Likelihood, outputs):
    model = lik.model
    outs = model.replace_rvs_by_values(outputs)
    outs, x = join_nonshared_inputs(lik._point, outs, model.value_vars)
    return outs, x


def mean_function(lik: Likelihood):
    """Compiled ``x -> [mean_k, d mean_k / d x for each observed variable]`` (cached)."""
    fn = _MEAN.get(lik)
    if fn is None:
        from pymc.distributions.moments.means import _mean

        means = []
        for rv in lik.model.observed_RVs:
            op, rng, params = _unsized(rv)
            try:
                means.append(_mean(op, rv, rng, NoneConst, *params))
            except NotImplementedError:
                raise MLEError(
                    f"the distribution of {rv.name!r} ({type(op).__name__.removesuffix('RV')}) "
                    "has no mean in PyMC; use kind='response' to simulate outcomes.") from None
        outs, x = _joined(lik, means)
        jacs = [pytensor.gradient.jacobian(m.ravel(), x, vectorize=True,
                                           disconnected_inputs="ignore") for m in outs]
        fn = _compile([x], [*outs, *jacs], lik.mode, model=lik.model)
        _MEAN[lik] = fn
    return fn


def simulator(lik: Likelihood, *, sized: bool = False):
    """Compiled ``x -> [draw of each observed variable]`` and its RNG shared variables (cached).

    ``sized=False``: the draws have the shape the current data give the parameters (new data:
    new rows). ``sized=True``: the observed variable's own shape (a replicate of the fitted
    outcome, also when the parameters are scalars).
    """
    per = _SIM.setdefault(lik, {})
    hit = per.get(sized)
    if hit is None:
        rngs, draws = [], []
        for rv in lik.model.observed_RVs:
            rng = pytensor.shared(np.random.default_rng(0))
            op, rng, params = _unsized(rv, rng)
            size = rv.owner.inputs[1] if sized else NoneConst
            draws.append(op.make_node(rng, size, *params).outputs[1])
            rngs.append(rng)
        outs, x = _joined(lik, draws)
        from mle_ppl._src.engine import likelihood as _lik

        with _lik._compile_lock:
            _lik.COMPILE_COUNT += 1
        fn = pm.pytensorf.compile([x], outs, mode=lik.mode, on_unused_input="ignore")
        hit = (fn, rngs)
        per[sized] = hit
    return hit


def simulate(lik: Likelihood, x: np.ndarray, seed, *, sized: bool = False
             ) -> dict[str, np.ndarray]:
    """One draw of every observed variable at the unconstrained point ``x`` (seeded)."""
    fn, rngs = simulator(lik, sized=sized)
    pm.pytensorf.reseed_rngs(rngs, seed)
    out = fn(np.asarray(x, dtype=float))
    return {name: np.asarray(v) for name, v in zip(lik.observed_names, out, strict=True)}


# ------------------------------------------------------------------------ data swapping
def _containers(model: pm.Model) -> dict[str, Any]:
    return {v.name: v for v in model.data_vars if hasattr(v, "get_value")}


def _observed_containers(model: pm.Model) -> set[str]:
    out = set()
    for rv in model.observed_RVs:
        val = model.rvs_to_values[rv]
        if hasattr(val, "get_value"):
            out.add(val.name)
    return out


def _row_containers(model: pm.Model, n_fit: int) -> set[str]:
    return {name for name, v in _containers(model).items()
            if np.ndim(v.get_value()) and np.shape(v.get_value())[0] == n_fit}


def _values_from_spec(fit: Estimate, new_data) -> dict[str, np.ndarray]:
    """Container values for a model-file fit, from a table with the data columns."""
    from mle_ppl._src.model.data import read_table

    spec = fit.spec
    table = read_table(new_data)
    if spec.kind == "python":
        ref_table = fit.data
        for col in getattr(ref_table, "columns", []):
            if col not in table.columns:  # e.g. the outcome: any valid value works
                table[col] = ref_table[col].iloc[0]
        model, _ = spec.model_for(table)
        if model is fit.likelihood.model:
            raise MLEError("internal: the model file returned the fitted model itself.")
        return {k: v.get_value() for k, v in _containers(model).items()}
    # TOML: fill missing outcome columns with a valid value, bind, map names to containers
    outcome_cols = set()
    for lk in spec._likelihoods:
        for it in spec._items:
            if it.name == lk.observed:
                outcome_cols.update(it.columns)
    for col in outcome_cols:
        if col not in table.columns and fit.data is not None and col in fit.data.columns:
            table[col] = fit.data[col].iloc[0]
    bound = spec.bind(table)
    names = spec._container_names(bound)
    return {names[k]: v for k, v in bound.arrays.items()}


def _values_from_mapping(fit: Estimate, new_data) -> dict[str, np.ndarray]:
    model = fit.likelihood.model
    conts = _containers(model)
    if isinstance(new_data, pd.DataFrame):
        new_data = {c: new_data[c].to_numpy() for c in new_data.columns}
    if not hasattr(new_data, "items"):
        raise DataError(f"new_data must be a mapping of container names to arrays (or a "
                        f"DataFrame); got {type(new_data).__name__}.")
    out = {}
    for k, v in new_data.items():
        if k not in conts:
            raise DataError(f"new_data has {k!r}, which is not a pm.Data container of the model "
                            f"(containers: {sorted(conts)}).{suggest(k, conts)}")
        out[k] = np.asarray(v)
    return out


class _swapped:
    """Context manager: put new container values into the model, restore them on exit."""

    def __init__(self, fit: Estimate, values: dict[str, np.ndarray]):
        self.model = fit.likelihood.model
        self.values = values

    def __enter__(self):
        model = self.model
        conts = _containers(model)
        self.old = {k: conts[k].get_value() for k in self.values}
        self.old_coords = {}
        coords = {}
        for k, v in self.values.items():
            dims = model.named_vars_to_dims.get(k) or ()
            if dims and dims[0] is not None and np.ndim(v):
                d = dims[0]
                if model.coords.get(d) is not None:
                    self.old_coords[d] = model.coords[d]
                    coords[d] = np.arange(np.shape(v)[0])
        try:
            pm.set_data(self.values, model=model, coords=coords or None)
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        pm.set_data(self.old, model=self.model, coords=self.old_coords or None)
        return False


def new_values(fit: Estimate, new_data) -> dict[str, np.ndarray]:
    """Container values for ``new_data`` (checked), filling the outcome containers."""
    model = fit.likelihood.model
    if fit.spec is not None:
        values = _values_from_spec(fit, new_data)
    else:
        values = _values_from_mapping(fit, new_data)
    conts = _containers(model)
    n_fit = _fit_rows(fit)
    needed = _row_containers(model, n_fit) - _observed_containers(model)
    missing = sorted(needed - set(values))
    if missing:
        raise DataError(
            f"new_data lacks {missing}: the model needs one row per observation of "
            f"{sorted(needed)} to predict. Add them (with the same columns/shape per row as in "
            "the fitted data).")
    lengths = {k: np.shape(v)[0] for k, v in values.items()
               if k in needed or k in _observed_containers(model)}
    if len(set(lengths.values())) > 1:
        raise DataError(f"new_data has different numbers of rows per container: {lengths}.")
    m = next(iter(lengths.values())) if lengths else n_fit
    for k, v in values.items():
        old = conts[k].get_value()
        if np.shape(v)[1:] != np.shape(old)[1:]:
            raise DataError(
                f"new_data {k!r} has shape {np.shape(v)} but the model was fitted with "
                f"{np.shape(old)} (per row {np.shape(old)[1:]}); give the same columns (and "
                "categorical levels) as the fitted data.")
        values[k] = np.asarray(v, dtype=old.dtype) if old.dtype.kind != "O" else v
    for k in _observed_containers(model):
        if k not in values or np.shape(values[k])[0] != m:
            old = conts[k].get_value()
            values[k] = np.zeros((m, *np.shape(old)[1:]), dtype=old.dtype) + (
                old.ravel()[0] if old.size else 0)
    return values


def _fit_rows(fit: Estimate) -> int:
    obs = fit.likelihood.observed_data
    first = next(iter(obs.values()))
    return int(np.shape(first)[0]) if np.ndim(first) else 1


# ----------------------------------------------------------------------------- predict
def predict(fit: Estimate, new_data=None, *, kind: str = "mean", level: float = 0.95,
            n_draws: int = 1000, parameter_uncertainty: bool = True,
            random_seed=None) -> pd.DataFrame:
    """Predictions with intervals, one row per new observation.

    Parameters
    ----------
    fit : Estimate
    new_data : DataFrame, mapping or path, optional
        New rows (see the module notes for which names are needed); the fitted data if None.
    kind : {"mean", "response"}
        ``"mean"``: columns ``mean, std_err, lower, upper`` (delta method). ``"response"``:
        columns ``mean, std, lower, upper`` from ``n_draws`` simulated outcomes.
    level : float
        Interval coverage.
    n_draws : int
        Simulated outcomes per row (``kind="response"``).
    parameter_uncertainty : bool
        ``kind="response"``: draw the parameters from the normal approximation (on the
        unconstrained scale) for each simulated outcome, rather than fixing them at the MLE.
    random_seed : int or numpy.random.Generator, optional

    Returns
    -------
    pandas.DataFrame
        Indexed by row (and by observed variable when the model has several).

    Examples
    --------
    >>> fit.predict(pd.DataFrame({"x1": [0.0, 1.0], "x2": [2.0, 3.0]}))        # doctest: +SKIP
    >>> fit.predict(new, kind="response", random_seed=1)                       # doctest: +SKIP
    """
    if kind not in KINDS:
        raise MLEError(f"kind={kind!r} is not a prediction kind; expected one of {list(KINDS)}."
                       f"{did_you_mean(kind, KINDS)}")
    if not 0 < level < 1:
        raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
    from mle_ppl._src.inference.robust import bread_unconstrained

    lik = fit.likelihood
    values = new_values(fit, new_data) if new_data is not None else {}
    C = bread_unconstrained(fit)  # on the fitted data: before swapping the new data in
    with _swapped(fit, values):
        if kind == "mean":
            frames = _predict_mean(fit, lik, level, C)
        else:
            frames = _predict_response(fit, lik, level, n_draws, parameter_uncertainty,
                                       random_seed, C)
    if len(frames) == 1:
        return next(iter(frames.values()))
    return pd.concat(frames, names=["variable", "row"])


def _predict_mean(fit: Estimate, lik, level, C) -> dict[str, pd.DataFrame]:
    out = mean_function(lik)(np.asarray(fit.x, dtype=float))
    k = len(lik.observed_names)
    z = stats.norm.ppf(0.5 + level / 2)
    frames = {}
    for j, name in enumerate(lik.observed_names):
        mean = np.asarray(out[j], dtype=float).ravel()
        G = np.asarray(out[k + j], dtype=float).reshape(mean.size, -1)
        if C is None:
            se = np.full(mean.size, np.nan)
        else:
            se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", G, C, G), 0, None))
        frames[name] = pd.DataFrame({"mean": mean, "std_err": se, "lower": mean - z * se,
                                     "upper": mean + z * se})
    return frames


def _predict_response(fit: Estimate, lik, level, n_draws, parameter_uncertainty, random_seed,
                      C):
    rng = np.random.default_rng(random_seed)
    x_hat = np.asarray(fit.x, dtype=float)
    L = None
    if parameter_uncertainty:
        if C is None:
            raise MLEError("parameter_uncertainty=True needs a trustworthy covariance, and this "
                           "fit has none (see fit.warnings); pass parameter_uncertainty=False.")
        L = np.linalg.cholesky(0.5 * (C + C.T))
    seeds = rng.integers(0, 2**63 - 1, size=n_draws)
    draws: dict[str, list] = {name: [] for name in lik.observed_names}
    for d in range(n_draws):
        x = x_hat if L is None else x_hat + L @ rng.standard_normal(len(x_hat))
        for name, v in simulate(lik, x, int(seeds[d])).items():
            if np.ndim(v) > 1:
                raise MLEError(f"kind='response' summarises one value per row, but {name!r} "
                               f"has shape {np.shape(v)} (a multivariate outcome).")
            draws[name].append(np.atleast_1d(np.asarray(v, dtype=float)))
    a = (1 - level) / 2
    frames = {}
    for name, lst in draws.items():
        D = np.stack(lst)  # (n_draws, rows)
        frames[name] = pd.DataFrame({"mean": D.mean(axis=0), "std": D.std(axis=0, ddof=1),
                                     "lower": np.quantile(D, a, axis=0),
                                     "upper": np.quantile(D, 1 - a, axis=0)})
    return frames
