"""Closed-form cross-checks of a fit: the MLE is least squares (MSE) or minimum cross-entropy.

Maximising a likelihood is minimising a loss. For a Gaussian likelihood whose mean is linear in the
parameters the MLE of the coefficients is the least-squares solution and ``σ̂² = RSS/n`` (the mean
squared error at it), so ``NLL(θ̂) = n/2 · (log(2π · MSE) + 1)``. For Bernoulli, binomial and
categorical likelihoods the negative log-likelihood *is* ``n ×`` the cross-entropy of the fitted
probabilities. The package recognises those models from the PyMC graph (:mod:`.detect`),
recomputes the solution independently of PyMC (:mod:`.reference`: NumPy/SciPy only, SVD least
squares, frequencies, a Newton/IRLS loop) and sets it beside a fit (:mod:`.checks`).

This module holds what the rest of the package calls: :func:`closed_form_check`
(``fit.closed_form()``, cached per fit), :func:`closed_form_dict` (the ``closed_form`` key of the
JSON document), :func:`closed_form_groups` (the DataTree groups) and :func:`plot_closed_form`.
Anything that is not one of the recognised structures says "no closed form applies" and why; it
never guesses.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from mle_ppl._src.errors import MLEError
from mle_ppl._src.report.checks import (
    LOGLIK_TOL,
    SE_TOL,
    CheckRow,
    ClosedFormCheck,
    cross_entropy_check,
    regression_check,
)
from mle_ppl._src.report.chunked_checks import chunked_check
from mle_ppl._src.report.detect import NotApplicable, detect
from mle_ppl._src.report.legend import add_key

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

__all__ = ["LOGLIK_TOL", "SE_TOL", "CheckRow", "ClosedFormCheck", "closed_form_check",
           "closed_form_dict", "closed_form_groups", "plot_closed_form"]

_CHECKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def closed_form_check(fit: Estimate, *, se_tol: float = SE_TOL,
                      loglik_tol: float = LOGLIK_TOL) -> ClosedFormCheck:
    """Set a fit beside its closed-form solution (least squares or minimum cross-entropy).

    Parameters
    ----------
    fit : Estimate
        A fit of a ``pm.Model`` (or model file). Its model's data must not have changed since.
    se_tol : float
        Tolerance for parameters and probabilities, in standard errors of the closed-form
        solution (default 1e-3: invisible to inference; a converged Newton fit is ~1e-5 SE off).
    loglik_tol : float
        Tolerance for log-likelihood identities that involve the optimum, in log-likelihood
        units (default 1e-6).

    Returns
    -------
    ClosedFormCheck
        ``applies=False`` with the reason when no closed form applies.

    Examples
    --------
    >>> import numpy as np, pymc as pm, mle_ppl
    >>> x = np.array([0.0, 1, 2, 3]); y = np.array([0.1, 0.9, 2.2, 2.8])
    >>> with pm.Model() as m:
    ...     a = pm.Flat("a"); b = pm.Flat("b"); s = pm.HalfFlat("s")
    ...     _ = pm.Normal("y", a + b * x, s, observed=y)
    >>> mle_ppl.fit(m).closed_form().agrees
    True
    """
    if not (se_tol > 0 and loglik_tol > 0):
        raise MLEError(f"se_tol={se_tol!r} and loglik_tol={loglik_tol!r} must be positive "
                       f"(defaults {SE_TOL:g} and {LOGLIK_TOL:g}).")
    per_fit = _CHECKS.setdefault(fit, {})
    key = (float(se_tol), float(loglik_tol))
    if key not in per_fit:
        # MLEFit.bound() (when present) puts the fit's own data back into the model's containers
        bound = getattr(fit, "bound", None)
        with bound() if callable(bound) else contextlib.nullcontext():
            per_fit[key] = _compute(fit, se_tol=se_tol, loglik_tol=loglik_tol)
    return per_fit[key]


def _compute(fit: Estimate, *, se_tol: float, loglik_tol: float) -> ClosedFormCheck:
    lik = fit.likelihood
    random = getattr(lik, "random_names", ())
    if random:
        # the detectors read a fixed-effects likelihood; a mixed model's is a marginal
        return ClosedFormCheck(applies=False, reason=(
            f"the model has random effects ({', '.join(random)}) integrated out: no closed "
            "form is checked for mixed models (a Gaussian LMM is compared with statsmodels "
            "MixedLM and lme4 in the tests instead)"))
    current = -lik.value(np.asarray(fit.x))
    if not math.isclose(current, fit.loglik, rel_tol=1e-9, abs_tol=1e-9):
        raise MLEError(
            f"the model's data changed since this fit (log-likelihood at θ̂ was {fit.loglik:.10g}, "
            f"is now {current:.10g}; pm.set_data?). Refit, then call closed_form() before "
            "changing the data again.")
    try:
        if not getattr(lik, "rows_in_memory", True):
            return chunked_check(fit, se_tol=se_tol, loglik_tol=loglik_tol)
        det = detect(fit.likelihood, fit.x)
        if det.family == "normal":
            return regression_check(fit, det, se_tol=se_tol, loglik_tol=loglik_tol)
        return cross_entropy_check(fit, det, se_tol=se_tol, loglik_tol=loglik_tol)
    except NotApplicable as na:
        return ClosedFormCheck(applies=False, reason=na.reason)


def closed_form_dict(fit: Estimate) -> dict[str, Any]:
    """``fit.to_dict()["closed_form"]``: the check as a dict, or ``applies: false`` and why."""
    try:
        return closed_form_check(fit).to_dict()
    except MLEError as err:
        return {"applies": False, "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - an export must not fail; the reason says why
        return {"applies": False, "reason": f"the closed-form check failed: "
                                             f"{type(err).__name__}: {err}"}


def closed_form_groups(fit: Estimate, posterior) -> dict[str, Any]:
    """The ``closed_form`` groups of the fit's DataTree (see :meth:`MLEFit.to_datatree`).

    Returns ``{"closed_form": Dataset, "closed_form/checks": Dataset}``. ``closed_form`` holds
    the closed-form value of each parameter with the name and dims of ``posterior`` without
    ``chain``/``draw`` (so ArviZ plots take it as reference values: ``arviz_plots.add_lines``);
    its attributes say whether a closed form applies, what it is, and whether the fit agrees.
    ``closed_form/checks`` is the table of :class:`ClosedFormCheck` along dim ``quantity``.
    """
    import xarray as xr

    try:
        check = closed_form_check(fit)
    except MLEError as err:
        check = ClosedFormCheck(applies=False, reason=str(err))
    except Exception as err:  # noqa: BLE001 - an export must not fail; the reason says why
        check = ClosedFormCheck(applies=False, reason=f"the closed-form check failed: "
                                                      f"{type(err).__name__}: {err}")
    data = {}
    for name, value in check.references.items():
        if name not in posterior:
            continue
        template = posterior[name].isel(chain=0, draw=0, drop=True)
        data[name] = template.copy(data=np.broadcast_to(value, template.shape).copy())
    ds = xr.Dataset(data)
    ds.attrs.update({"applies": int(check.applies), "reason": check.reason,
                     "kind": check.kind or "", "family": check.family or "",
                     "link": check.link or "", "reference": check.reference})
    if check.applies:
        ds.attrs["agrees"] = int(bool(check.agrees))
    rows = xr.Dataset(
        {"mle": ("quantity", np.array([r.mle for r in check.rows], dtype=float)),
         "closed_form": ("quantity", np.array([r.closed_form for r in check.rows], dtype=float)),
         "abs_diff": ("quantity", np.array([r.abs_diff for r in check.rows], dtype=float)),
         "tol": ("quantity", np.array([r.tol for r in check.rows], dtype=float)),
         "agrees": ("quantity", np.array([r.agrees for r in check.rows], dtype=bool))},
        coords={"quantity": [r.quantity for r in check.rows]})
    return {"closed_form": ds, "closed_form/checks": rows}


def plot_closed_form(fit: Estimate, *, laplace_draws: int = 2000, random_seed=0, var_names=None,
                     **pc_kwargs):
    """Draw the fit (Laplace approximation) with reference lines at the closed-form solution.

    Uses ``arviz_plots.plot_dist`` on the posterior group of ``fit.to_datatree(laplace_draws=)``
    and ``arviz_plots.add_lines`` with the DataTree's ``closed_form`` group.

    Parameters
    ----------
    fit : Estimate
    laplace_draws : int
        Draws from the normal approximation at the MLE (shows the sampling uncertainty).
    random_seed : int or numpy.random.Generator
    var_names : list of str, optional
        Variables to draw (default: those with a closed-form value).
    **pc_kwargs
        Passed to ``arviz_plots.plot_dist``.

    Returns
    -------
    arviz_plots.PlotCollection
        With a key below the panels for the density, its mean and 95 % HDI, and the dashed
        closed-form line.

    Examples
    --------
    >>> pc = fit.plot_closed_form()          # doctest: +SKIP
    >>> pc.savefig("closed_form.png")        # doctest: +SKIP
    """
    import arviz_plots as azp

    check = closed_form_check(fit)
    if not check.applies:
        raise MLEError(f"no closed form applies to this fit, so there is nothing to draw: "
                       f"{check.reason}")
    if not check.references:
        raise MLEError("the closed-form check has no reference values for the parameters "
                       f"({'; '.join(check.notes)}).")
    dt = fit.to_datatree(laplace_draws=laplace_draws, random_seed=random_seed)
    refs = dt["closed_form"].to_dataset()
    names = list(var_names) if var_names is not None else list(refs.data_vars)
    missing = [n for n in names if n not in refs]
    if missing:
        raise MLEError(f"var_names {missing} have no closed-form value; choose among "
                       f"{list(refs.data_vars)}.")
    n_panels = sum(int(refs[n].size) for n in names)
    cols = min(4, max(n_panels, 1))
    rows = -(-n_panels // cols)
    pc_kwargs.setdefault("col_wrap", cols)
    fig_kw = dict(pc_kwargs.pop("figure_kwargs", None) or {})
    fig_kw.setdefault("figsize", (3.4 * cols, 2.6 * rows + 0.3))
    fig_kw.setdefault("layout", "constrained")
    pc_kwargs["figure_kwargs"] = fig_kw
    pc_kwargs.setdefault("ci_kind", "hdi")
    pc_kwargs.setdefault("ci_prob", 0.95)
    visuals = dict(pc_kwargs.pop("visuals", None) or {})
    # arviz-plots' text rounds the mean to 2 digits ("-3500000.0 mean"): a number that looks
    # more precise than it is; the key below explains the dot and bar instead.
    visuals.setdefault("point_estimate_text", False)
    pc = azp.plot_dist(dt, var_names=names, visuals=visuals, **pc_kwargs)
    azp.add_lines(pc, refs[names], visuals={"ref_line": {"color": "C1", "linestyle": "--"}})
    add_key(pc, [(f"Laplace approximation at the MLE ({laplace_draws} draws)",
                  {"color": "C0"}),
                 (f"its mean and {pc_kwargs['ci_prob']:.0%} HDI", "interval"),
                 (f"closed form ({check.kind.replace('_', ' ')})",
                  {"color": "C1", "linestyle": "--"})])
    return pc


