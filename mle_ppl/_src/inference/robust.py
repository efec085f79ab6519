"""Robust (sandwich) covariances from per-observation scores.

The log-likelihood is a sum over observations, ``l(x) = sum_i l_i(x)``. Its per-observation scores
``s_i = d l_i / d x`` are the objective's ``scores(x)`` (for the in-memory likelihood, one compiled
Jacobian of the per-row log-likelihood, compiled once per model).

With ``A`` the observed information (Hessian of the negative log-likelihood) and ``B`` the outer
product of the scores, the sandwich is ``A^-1 B A^-1`` on the unconstrained scale, mapped to the
user's scale by the delta method ``J V J'`` (exact at a stationary point, where the scores of the
two parametrisations differ by the Jacobian only).

Rows: see :meth:`~mle_ppl._src.engine.likelihood.Likelihood.row_loglik_graph`. An objective
without per-row scores in memory (streamed or Dask data) provides ``meat(x, groups)``, the middle
of the sandwich summed chunk by chunk (per cluster when ``groups`` names a column of the data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mle_ppl._src.engine.objective import NotAvailable
from mle_ppl._src.errors import DataError, MLEError, did_you_mean

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

#: The one registry of covariance types: name -> description.
COV_TYPES = {
    "nonrobust": "inverse observed information (the default)",
    "HC0": "sandwich A^-1 B A^-1 with B the outer product of per-row scores",
    "HC1": "HC0 times n / (n - k), k = number of free parameters",
    "cluster": "scores summed within groups; times G/(G-1) * (n-1)/(n-k) (statsmodels' default)",
}

def _groups(fit: Estimate, groups, n: int) -> np.ndarray:
    if groups is None:
        raise MLEError('kind="cluster" needs groups=: an array with one group label per '
                       "observation, or the name of a column of the fitted data table.")
    if isinstance(groups, str):
        table = fit.data
        cols = list(getattr(table, "columns", []))
        if table is None or groups not in cols:
            raise DataError(
                f"groups={groups!r} is not a column of the fitted data "
                f"({cols if cols else 'the fit has no data table: pass an array'})."
                f"{did_you_mean(groups, cols)}")
        groups = np.asarray(table[groups])
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n:
        raise DataError(f"groups= has shape {groups.shape}; expected one label per observation "
                        f"({n},).")
    return groups


def sandwich_unconstrained(S: np.ndarray, bread: np.ndarray, kind: str,
                           groups: np.ndarray | None = None) -> np.ndarray:
    """Array layer: ``bread @ B @ bread`` with the small-sample factor of ``kind``.

    ``S`` holds per-observation scores (n, k); ``bread`` is the inverse observed information.
    """
    n, k = S.shape
    if kind == "cluster":
        _, inv = np.unique(groups, return_inverse=True)
        G = int(inv.max()) + 1
        if G < 2:
            raise DataError("groups= has a single group; cluster-robust errors need at least 2.")
        Sg = np.zeros((G, k))
        np.add.at(Sg, inv, S)
        meat = Sg.T @ Sg * (G / (G - 1)) * ((n - 1) / (n - k))
    else:
        meat = S.T @ S
        if kind == "HC1":
            if n <= k:
                raise MLEError(f"HC1 needs more observations ({n}) than parameters ({k}).")
            meat = meat * (n / (n - k))
    V = bread @ meat @ bread
    return 0.5 * (V + V.T)


def _sandwich_from_meat(lik, fit: Estimate, bread: np.ndarray, kind: str, groups) -> np.ndarray:
    """The sandwich from the objective's ``meat(x, groups)`` (a sum over chunks) with the same
    small-sample factors as :func:`sandwich_unconstrained`."""
    n, k = fit.n_obs, len(fit.labels)
    if kind == "cluster":
        if groups is None:
            raise MLEError('kind="cluster" needs groups=: the name of a column of the data.')
        meat, G = lik.meat(fit.x, groups)
        if G < 2:
            raise DataError("groups= has a single group; cluster-robust errors need at least 2.")
        meat = meat * (G / (G - 1)) * ((n - 1) / (n - k))
    else:
        meat, _ = lik.meat(fit.x)
        if kind == "HC1":
            if n <= k:
                raise MLEError(f"HC1 needs more observations ({n}) than parameters ({k}).")
            meat = meat * (n / (n - k))
    V = bread @ meat @ bread
    return 0.5 * (V + V.T)


def bread_unconstrained(fit: Estimate) -> np.ndarray | None:
    """Inverse observed information at ``fit.x`` (unconstrained), or None if not trustworthy.

    Recomputed from the Hessian at the reported optimum (one evaluation, no compilation) rather
    than taken from ``fit.cov_unconstrained``, which the optimizer may have formed a refinement
    step earlier.
    """
    if not np.all(np.isfinite(fit.cov_unconstrained)):
        return None
    H = fit.likelihood.hessian(fit.x)
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return None


def robust_cov(fit: Estimate, kind: str = "HC0", *, groups=None) -> pd.DataFrame:
    """Sandwich covariance of the estimates on the user's scale, labels × labels.

    Parameters
    ----------
    fit : Estimate
    kind : {"HC0", "HC1", "cluster", "nonrobust"}
        See :data:`COV_TYPES`. ``"nonrobust"`` returns ``fit.cov``.
    groups : array-like or str, optional
        For ``kind="cluster"``: one group label per observation (row), or the name of a column of
        the fitted data table (models fitted from a model file).

    Returns
    -------
    pandas.DataFrame
        NaN when the observed information is not trustworthy (see ``fit.warnings``).

    Examples
    --------
    >>> fit.robust_cov("HC1")                        # doctest: +SKIP
    >>> fit.table(cov_type="cluster", groups="firm")  # doctest: +SKIP
    """
    if kind not in COV_TYPES:
        raise MLEError(f"cov_type={kind!r} is not a covariance type; expected one of "
                       f"{list(COV_TYPES)}.{did_you_mean(kind, COV_TYPES)}")
    labels = list(fit.labels)
    if kind == "nonrobust":
        return fit.cov
    lik = fit.likelihood
    try:
        S = lik.scores(fit.x)
    except NotAvailable:
        if not hasattr(lik, "meat"):
            raise
        S = None  # chunked or distributed data: the meat is summed chunk by chunk
    if S is not None:
        g = _groups(fit, groups, S.shape[0]) if kind == "cluster" else None
    bread = bread_unconstrained(fit)
    if bread is None:
        V = np.full((len(labels), len(labels)), np.nan)
    else:
        Vu = (sandwich_unconstrained(S, bread, kind, g) if S is not None
              else _sandwich_from_meat(lik, fit, bread, kind, groups))
        J = lik.constrained_jacobian(fit.x)
        V = J @ Vu @ J.T
        V = 0.5 * (V + V.T)
    return pd.DataFrame(V, index=labels, columns=labels)
