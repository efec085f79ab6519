"""An MLE fit as an ArviZ ``DataTree`` with the variable names and dims of ``pm.sample`` output."""

from __future__ import annotations

import warnings

import numpy as np
import pymc
import xarray as xr
from arviz_base import dict_to_dataset
from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants, find_observations


def _dataset(data, model, sample_dims=("chain", "draw")):
    coords, dims = coords_and_dims_for_inferencedata(model)
    with warnings.catch_warnings():
        # arviz-base warns about its own naming conventions for dims it invents; harmless here.
        warnings.simplefilter("ignore", UserWarning)
        return dict_to_dataset(data, inference_library=pymc, coords=coords, dims=dims,
                               sample_dims=list(sample_dims))


def fit_to_datatree(fit, *, laplace_draws: int = 0, random_seed=None) -> xr.DataTree:
    """Build the DataTree of docs/datatree.md for ``fit`` (see :meth:`MLEFit.to_datatree`)."""
    lik = fit.likelihood
    model = lik.model
    # random effects (a mixed model: their conditional modes) sit in the posterior too
    names = ([b.name for b in lik.blocks] + list(getattr(lik, "random_names", ()))
             + list(lik.deterministic_names))
    if laplace_draws:
        if not np.all(np.isfinite(fit.cov_unconstrained)):
            from mle_ppl._src.errors import MLEError

            raise MLEError("laplace_draws needs a finite covariance, but this fit has warnings "
                           f"({'; '.join(fit.warnings)}).")
        rng = np.random.default_rng(random_seed)
        draws_u = rng.multivariate_normal(np.array(fit.x), np.array(fit.cov_unconstrained),
                                          size=int(laplace_draws), method="eigh")
    else:
        draws_u = np.array(fit.x)[None, :]
    post = {n: [] for n in names}
    pointwise = {n: [] for n in lik.observed_names}
    for u in draws_u:
        vals = lik.constrained(u)
        for n in names:
            post[n].append(vals[n])
        for k, v in lik.pointwise(u).items():
            pointwise[k].append(v)
    post = {n: np.stack(v)[None] for n, v in post.items()}
    pointwise = {n: np.stack(v)[None] for n, v in pointwise.items()}
    tree = {
        "posterior": _dataset(post, model),
        "log_likelihood": _dataset(pointwise, model),
        "observed_data": _dataset(find_observations(model), model, sample_dims=()),
    }
    if laplace_draws:
        tree["sample_stats"] = _laplace_stats(fit, draws_u, pointwise)
    constants = find_constants(model)
    if constants:
        tree["constant_data"] = _dataset(constants, model, sample_dims=())
    labels = list(fit.labels)
    tree["fit"] = xr.Dataset(
        {"mean": ("label", np.array(fit.theta)),
         "std_err": ("label", fit.std_errors.to_numpy()),
         "cov": (("label", "label_bis"), np.array(fit.cov_array))},
        coords={"label": labels, "label_bis": labels})
    tree["optimizer_result"] = xr.Dataset(
        {"loglik": fit.loglik, "aic": fit.aic, "bic": fit.bic, "n_obs": fit.n_obs,
         "converged": fit.converged, "iterations": fit.iterations, "grad_norm": fit.grad_norm,
         "hessian_min_eig": fit.hessian_min_eig, "hessian_cond": fit.hessian_cond},
        attrs={"method": fit.method, "criterion": fit.criterion, "model": fit.model_name,
               "warnings": "\n".join(fit.warnings),
               "kind": "laplace" if laplace_draws else "mle",
               "random_effects_method": (fit.random_effects.method
                                         if fit.random_effects is not None else "")})
    # closed-form solution (least squares / minimum cross-entropy) as ArviZ reference values
    from mle_ppl._src.report.closed_form import closed_form_groups

    tree.update(closed_form_groups(fit, tree["posterior"]))
    dt = xr.DataTree.from_dict({k: v for k, v in tree.items()})
    dt.attrs["inference_library"] = "mle_ppl"
    return dt


def _laplace_stats(fit, draws_u: np.ndarray, pointwise: dict) -> xr.Dataset:
    """``lp`` and ``log_q`` per Laplace draw, for importance-sampling corrections.

    ``log_q`` is the normal approximation's log density on the unconstrained scale (where the
    draws were made); ``lp`` the flat-prior log posterior on that same scale, up to a constant:
    the log-likelihood plus ``log|det d theta/d x|`` (NaN when the transform changes dimension).
    ``arviz_stats.loo_approximate_posterior(tree, log_p=lp, log_q=log_q)`` then estimates the
    ELPD-LOO of the flat-prior posterior from the Laplace draws.
    """
    from scipy import stats

    lik = fit.likelihood
    loglik = sum(v.reshape(v.shape[0], v.shape[1], -1).sum(axis=-1) for v in pointwise.values())
    log_det = np.zeros(len(draws_u))
    for i, u in enumerate(draws_u):
        J = lik.constrained_jacobian(u)
        if J.shape[0] != J.shape[1]:
            log_det[:] = np.nan
            break
        log_det[i] = np.linalg.slogdet(J)[1] if J.size else 0.0
    log_q = stats.multivariate_normal(np.array(fit.x), np.array(fit.cov_unconstrained),
                                      allow_singular=True).logpdf(draws_u)
    log_q = np.atleast_1d(log_q)
    return xr.Dataset(
        {"lp": (("chain", "draw"), loglik + log_det[None]),
         "log_q": (("chain", "draw"), log_q[None])},
        coords={"chain": [0], "draw": np.arange(len(draws_u))},
        attrs={"description": "lp: flat-prior log posterior on the unconstrained scale (log-"
               "likelihood + log|det Jacobian|, up to a constant); log_q: log density of the "
               "Laplace (normal) approximation the draws came from."})
