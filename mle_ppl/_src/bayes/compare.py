"""``mle_ppl.compare``: the MLE and a posterior side by side, per parameter and for the model.

Per parameter: the MLE with its standard error and Wald interval, the posterior mean, sd and HDI
at the same level, and two Bernstein–von Mises checks: ``shift_se = (mean - MLE) / SE`` (near 0)
and ``sd_ratio = sd / SE`` (near 1). Under flat priors and a regular, large-sample likelihood
both hold up to Monte Carlo error; small samples, skewed likelihoods, boundaries and informative
priors show up as departures, which the result reports in words (``notes``).

For the model: log-likelihood at the MLE, AIC, BIC, and the PSIS-LOO ELPD of the posterior and of
the flat-prior posterior estimated from Laplace draws (``arviz_stats.loo_approximate_posterior``).
"""

from __future__ import annotations

import html
import json
import math
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from mle_ppl._src.bayes.compare_random import RE_COLUMNS, random_effects_rows
from mle_ppl._src.bayes.sample import sampling_problems
from mle_ppl._src.errors import MLEError, SamplingWarning

#: Columns of :attr:`Comparison.table`, in order.
COLUMNS = ("mle", "std_err", "wald_lower", "wald_upper", "mean", "sd", "hdi_lower", "hdi_upper",
           "shift_se", "sd_ratio", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat",
           "agrees")

#: A departure from the Bernstein–von Mises picture is reported when it exceeds this many
#: standard errors (shift) or this fraction (sd ratio), on top of 3 Monte Carlo errors.
SHIFT_TOL = 0.1
SD_RATIO_TOL = 0.1


@dataclass(frozen=True, eq=False, repr=False)
class Comparison:
    """The MLE and a posterior of the same model, side by side (see :func:`compare`).

    Immutable: :attr:`table` returns a copy; numbers are on the user's scale.

    Examples
    --------
    >>> cmp = mle_ppl.compare(fit, posterior)     # doctest: +SKIP
    >>> cmp.table[["mle", "mean", "shift_se", "sd_ratio"]]   # doctest: +SKIP
    """

    model_name: str
    level: float
    _table: pd.DataFrame = field(repr=False)
    model_stats: MappingProxyType  #: loglik, aic, bic, n_obs, n_params, elpd_loo(_se), ...
    priors: MappingProxyType  #: the posterior's prior per variable ("Flat", "Normal(0, 2.5)")
    notes: tuple[str, ...]  #: departures from the MLE, in words
    warnings: tuple[str, ...]  #: sampling and LOO diagnostics
    #: mixed models: random-effect modes beside their posterior (columns ``RE_COLUMNS``)
    random_effects: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def table(self) -> pd.DataFrame:
        """One row per parameter label; columns :data:`COLUMNS`."""
        return self._table.copy()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._table.index)

    @property
    def flat_priors(self) -> bool:
        """True when every parameter kept its flat prior (posterior ∝ likelihood)."""
        return all(p in ("Flat", "HalfFlat", "Uniform") or p.startswith("Uniform(")
                   for p in self.priors.values())

    # ------------------------------------------------------------------ exports
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and infinities become ``null``)."""
        params = {}
        for lab, row in self._table.iterrows():
            params[lab] = {c: (bool(row[c]) if c == "agrees" else _num(row[c])) for c in COLUMNS}
        re_rows = None
        if self.random_effects is not None:
            re_rows = {lab: {c: _num(row[c]) for c in RE_COLUMNS}
                       for lab, row in self.random_effects.iterrows()}
        return {"model": self.model_name, "level": self.level, "priors": dict(self.priors),
                "parameters": params, "random_effects": re_rows,
                "model_stats": {k: _num(v) for k, v in self.model_stats.items()},
                "notes": list(self.notes), "warnings": list(self.warnings)}

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    # ------------------------------------------------------------------ display
    def _model_rows(self) -> list[tuple[str, str]]:
        s = self.model_stats
        rows = [("log-likelihood at MLE", f"{s['loglik']:.6g}"), ("AIC", f"{s['aic']:.6g}"),
                ("BIC", f"{s['bic']:.6g}"), ("n_obs", f"{s['n_obs']:.0f}")]
        for key, label in (("elpd_loo", "ELPD-LOO (posterior)"),
                           ("elpd_loo_laplace", "ELPD-LOO (Laplace draws)")):
            if math.isfinite(s.get(key, math.nan)):
                rows.append((label, f"{s[key]:.6g} ± {s[key + '_se']:.3g} "
                             f"(p_loo {s['p_' + key.removeprefix('elpd_')]:.3g})"))
        return rows

    def _columns_for_display(self) -> pd.DataFrame:
        tab = self._table.copy()
        tab["ess_bulk"] = tab["ess_bulk"].round(0)
        tab["ess_tail"] = tab["ess_tail"].round(0)
        return tab.drop(columns=["mcse_sd"])

    def __str__(self) -> str:
        priors = ", ".join(f"{k} ~ {v}" for k, v in self.priors.items())
        head = (f"MLE vs posterior: {self.model_name} ({self.level:.0%} Wald interval vs "
                f"{self.level:.0%} HDI)\npriors: {priors}")
        with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 200,
                               "display.max_columns", 30):
            body = self._columns_for_display().to_string()
        model = "\n".join(f"{k:>26}: {v}" for k, v in self._model_rows())
        if self.random_effects is not None:
            with pd.option_context("display.float_format", "{:.4g}".format, "display.width",
                                   200, "display.max_rows", 30):
                body += ("\n\nRandom effects: empirical-Bayes modes (MLE) vs posterior\n"
                         + self.random_effects.to_string())
        notes = "".join(f"\nNote: {n}" for n in self.notes)
        warn = "".join(f"\nWARNING: {w}" for w in self.warnings)
        return f"{head}\n\n{body}\n\n{model}{notes}{warn}"

    def __repr__(self) -> str:
        return (f"<Comparison {self.model_name!r}: {len(self._table)} params, "
                f"{int(self._table['agrees'].sum())} agree, notes={len(self.notes)}, "
                f"warnings={len(self.warnings)}>")

    def _repr_html_(self) -> str:
        priors = ", ".join(f"{html.escape(k)} ~ {html.escape(v)}" for k, v in self.priors.items())
        tab = self._columns_for_display().to_html(float_format=lambda v: f"{v:.4g}",
                                                  na_rep="NaN")
        model = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                        f"<td>{html.escape(v)}</td></tr>" for k, v in self._model_rows())
        notes = "".join(f"<p><i>Note:</i> {html.escape(n)}</p>" for n in self.notes)
        warn = "".join(f"<p style='color:#b00'><b>Warning:</b> {html.escape(w)}</p>"
                       for w in self.warnings)
        return (f"<div><b>MLE vs posterior: {html.escape(self.model_name)}</b> "
                f"({self.level:.0%} Wald interval vs {self.level:.0%} HDI)<br>"
                f"<small>priors: {priors}</small>{tab}<table>{model}</table>{notes}{warn}</div>")


# --------------------------------------------------------------------------- helpers
def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def posterior_draws(fit, posterior: xr.DataTree) -> xr.Dataset:
    """The posterior of ``fit``'s parameters as one variable ``theta`` with a ``label`` dim."""
    if not isinstance(posterior, xr.DataTree) or "posterior" not in posterior.children:
        raise MLEError(f"posterior must be an xarray.DataTree with a 'posterior' group (what "
                       f"mle_ppl.sample returns); got {type(posterior).__name__}.")
    post = posterior["posterior"].to_dataset()
    cols = []
    for b in fit.likelihood.blocks:
        if b.name not in post:
            raise MLEError(f"the posterior has no variable {b.name!r} (it has "
                           f"{sorted(post.data_vars)}); sample the same model as the fit.")
        da = post[b.name]
        extra = tuple(d for d in da.dims if d not in ("chain", "draw"))
        arr = da.transpose("chain", "draw", *extra).values
        if tuple(arr.shape[2:]) != tuple(b.shape):
            raise MLEError(f"posterior variable {b.name!r} has shape {arr.shape[2:]}, but the "
                           f"fit's {b.name} has shape {b.shape}; sample the same model and data.")
        cols.append(arr.reshape(arr.shape[0], arr.shape[1], -1))
    theta = np.concatenate(cols, axis=-1) if cols else np.zeros((1, 1, 0))
    return xr.Dataset({"theta": (("chain", "draw", "label"), theta)},
                      coords={"label": list(fit.labels)})


def _one_loglik(tree: xr.DataTree) -> xr.DataTree:
    """A tree whose ``log_likelihood`` group holds one variable (all observed variables)."""
    ll = tree["log_likelihood"].to_dataset()
    if len(ll.data_vars) == 1:
        return tree
    parts = [ll[k].transpose("chain", "draw", ...).values for k in ll.data_vars]
    arr = np.concatenate([p.reshape(p.shape[0], p.shape[1], -1) for p in parts], axis=-1)
    new = {"log_likelihood": xr.Dataset({"all_observed": (("chain", "draw", "obs_all"), arr)})}
    for g in ("posterior", "sample_stats"):
        if g in tree.children:
            new[g] = tree[g].to_dataset()
    return xr.DataTree.from_dict(new)


def _loo(tree: xr.DataTree, *, approx: bool = False):
    """PSIS-LOO (or its approximate-posterior version); Pareto-k trouble returned as text."""
    import arviz_stats

    tree = _one_loglik(tree)
    with warnings.catch_warnings():
        # arviz-stats warns about large Pareto k; we report it in the result instead.
        warnings.simplefilter("ignore", UserWarning)
        if approx:
            ss = tree["sample_stats"].to_dataset()
            res = arviz_stats.loo_approximate_posterior(tree, log_p=ss["lp"], log_q=ss["log_q"],
                                                        pointwise=True)
        else:
            res = arviz_stats.loo(tree, pointwise=True)
    problem = None
    if res.warning:
        k = np.asarray(res.pareto_k)
        problem = (f"{int(np.sum(k > res.good_k))} of {k.size} observations have Pareto k > "
                   f"{res.good_k:.2f} (max {np.nanmax(k):.2f}): the importance-sampling LOO "
                   "estimate is unreliable for them (influential observations, or draws far "
                   "from the leave-one-out posterior).")
    return res, problem


def _priors_of(posterior: xr.DataTree, fit) -> dict[str, str]:
    text = posterior["posterior"].attrs.get("mle_ppl_priors")
    if text:
        try:
            return dict(json.loads(text))
        except (TypeError, ValueError):
            pass
    return {b.name: "unknown" for b in fit.likelihood.blocks}


# --------------------------------------------------------------------------- compare
def compare(fit, posterior: xr.DataTree, *, level: float = 0.95, laplace_draws: int = 1000,
            random_seed=None, warn: bool = True) -> Comparison:
    """Compare an MLE fit with a posterior of the same model, per parameter and for the model.

    Parameters
    ----------
    fit : MLEFit
        From :func:`mle_ppl.fit`.
    posterior : xarray.DataTree
        From :func:`mle_ppl.sample` (or ``pm.sample`` on the same model, with a
        ``log_likelihood`` group for the ELPD rows).
    level : float
        Level of the Wald interval and of the HDI.
    laplace_draws : int
        Draws from the Laplace approximation for its ELPD-LOO (0: skip).
    random_seed : int or numpy.random.Generator, optional
        Seed of the Laplace draws.
    warn : bool
        Emit :class:`~mle_ppl.SamplingWarning` for bad sampling diagnostics (always listed in
        ``.warnings``).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> fit = mle_ppl.fit(model)                                           # doctest: +SKIP
    >>> post = mle_ppl.sample(model, draws=500, chains=2, random_seed=1)   # doctest: +SKIP
    >>> print(mle_ppl.compare(fit, post))                                  # doctest: +SKIP
    """
    import arviz_stats

    if not 0 < level < 1:
        raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
    if not hasattr(fit, "likelihood") or not hasattr(fit, "labels"):
        raise MLEError(f"fit must be an MLEFit (from mle_ppl.fit); got {type(fit).__name__}.")
    draws = posterior_draws(fit, posterior)
    priors = _priors_of(posterior, fit)
    n_chain = draws.sizes["chain"]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # Constant draws (a parameter stuck) make R-hat/ESS divide by zero: NaN is the answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = draws["theta"].mean(("chain", "draw")).values
        sd = draws["theta"].std(("chain", "draw"), ddof=1).values
        hdi = arviz_stats.hdi(draws, prob=level)["theta"].transpose("label", "ci_bound").values
        ess_bulk = arviz_stats.ess(draws, method="bulk")["theta"].values
        ess_tail = arviz_stats.ess(draws, method="tail")["theta"].values
        mcse_mean = arviz_stats.mcse(draws, method="mean")["theta"].values
        mcse_sd = arviz_stats.mcse(draws, method="sd")["theta"].values
        r_hat = (arviz_stats.rhat(draws)["theta"].values if n_chain > 1
                 else np.full(len(mean), np.nan))
    mle = np.array(fit.theta)
    se = fit.std_errors.to_numpy()
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = (mean - mle) / se
        ratio = sd / se
        shift_mc = 3 * mcse_mean / se
        ratio_mc = 3 * mcse_sd / se
    agrees = (np.abs(shift) <= SHIFT_TOL + shift_mc) & (np.abs(ratio - 1) <= SD_RATIO_TOL
                                                        + ratio_mc)
    table = pd.DataFrame({
        "mle": mle, "std_err": se, "wald_lower": mle - z * se, "wald_upper": mle + z * se,
        "mean": mean, "sd": sd, "hdi_lower": hdi[:, 0], "hdi_upper": hdi[:, 1],
        "shift_se": shift, "sd_ratio": ratio, "mcse_mean": mcse_mean, "mcse_sd": mcse_sd,
        "ess_bulk": ess_bulk, "ess_tail": ess_tail, "r_hat": r_hat, "agrees": agrees,
    }, index=pd.Index(list(fit.labels), name="label"))

    notes: list[str] = []
    re_table, re_notes = random_effects_rows(fit, posterior, level)
    boundary = set(fit.random_effects.boundary) if fit.random_effects is not None else set()
    re_names = set(fit.random_effects.names) if fit.random_effects is not None else set()
    flat = all(v in ("Flat", "HalfFlat") or v.startswith("Uniform") for k, v in priors.items()
               if k not in re_names)  # random effects keep their own distribution
    off_boundary = np.array([lab not in boundary for lab in fit.labels], dtype=bool)
    if not np.all(np.isfinite(se[off_boundary])):
        notes.append("the MLE has no finite standard errors (" + "; ".join(fit.warnings)
                     + "): the Wald interval and the SE-scaled checks are NaN; the posterior "
                     "columns still describe the posterior.")
    for i, lab in enumerate(fit.labels):
        if agrees[i] or not np.isfinite(se[i]):
            continue
        parts = []
        if abs(shift[i]) > SHIFT_TOL + shift_mc[i]:
            parts.append(f"the posterior mean is {abs(shift[i]):.2f} SE "
                         f"{'above' if shift[i] > 0 else 'below'} the MLE")
        if abs(ratio[i] - 1) > SD_RATIO_TOL + ratio_mc[i]:
            parts.append(f"the posterior sd is {ratio[i]:.2f}× the standard error")
        why = ("the priors pull the posterior away from the likelihood" if not flat else
               "under flat priors this means the likelihood is not normal-shaped here (small "
               "sample, skewness, or a boundary), so the Wald interval is less reliable than "
               "the posterior's or a profile interval")
        notes.append(f"{lab}: {' and '.join(parts)}; {why}.")
    notes += re_notes

    problems = [str(p) for p in sampling_problems(posterior, [b.name for b in
                                                             fit.likelihood.blocks])]
    loo_notes: list[str] = []
    mstats: dict[str, float] = {"loglik": fit.loglik, "aic": fit.aic, "bic": fit.bic,
                                "n_obs": float(fit.n_obs), "n_params": float(fit.n_params)}
    for key in ("elpd_loo", "elpd_loo_se", "p_loo", "elpd_loo_laplace", "elpd_loo_laplace_se",
                "p_loo_laplace"):
        mstats[key] = math.nan
    if "log_likelihood" in posterior.children:
        res, prob = _loo(posterior)
        mstats.update(elpd_loo=float(res.elpd), elpd_loo_se=float(res.se), p_loo=float(res.p))
        if prob:
            loo_notes.append("ELPD-LOO (posterior): " + prob)
    else:
        notes.append("the posterior has no log_likelihood group, so there is no ELPD-LOO; "
                     "mle_ppl.sample adds it (or call pm.compute_log_likelihood).")
    if laplace_draws and np.all(np.isfinite(fit.cov_unconstrained)):
        lap = fit.to_datatree(laplace_draws=int(laplace_draws), random_seed=random_seed)
        approx = bool(np.all(np.isfinite(lap["sample_stats"]["lp"].values)))
        res, prob = _loo(lap, approx=approx)
        mstats.update(elpd_loo_laplace=float(res.elpd), elpd_loo_laplace_se=float(res.se),
                      p_loo_laplace=float(res.p))
        if prob:
            loo_notes.append("ELPD-LOO (Laplace): " + prob)
    elif laplace_draws:
        notes.append("no Laplace ELPD-LOO: the fit has no finite covariance.")
    all_warnings = tuple(problems + loo_notes)
    if warn:
        for msg in problems:
            warnings.warn(f"model {fit.model_name!r}: {msg}", SamplingWarning, stacklevel=2)
    return Comparison(model_name=fit.model_name, level=float(level), _table=table,
                      model_stats=MappingProxyType(mstats), priors=MappingProxyType(priors),
                      notes=tuple(notes), warnings=all_warnings, random_effects=re_table)
