"""Likelihood-ratio tests and information-criterion tables for fits on the same data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from mle_ppl._src.engine.numbers import fmt_p
from mle_ppl._src.engine.reml import check_comparable
from mle_ppl._src.errors import DataError, MLEError

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate


def _observed(fit: Estimate) -> list[np.ndarray]:
    obs = fit.likelihood.observed_data
    return [np.asarray(obs[k]) for k in sorted(obs)]


def check_same_data(fits: Sequence[Estimate], names: Sequence[str]) -> None:
    """Raise :class:`DataError` unless all fits have the same n_obs and observed values."""
    ref, ref_name = fits[0], names[0]
    ref_obs = _observed(ref)
    for fit, name in zip(fits[1:], names[1:], strict=True):
        if fit.n_obs != ref.n_obs:
            raise DataError(
                f"{name!r} was fitted on {fit.n_obs} observations and {ref_name!r} on "
                f"{ref.n_obs}: likelihoods on different data cannot be compared. Fit both "
                "models to the same rows (drop missing values first, in both).")
        obs = _observed(fit)
        same = len(obs) == len(ref_obs) and all(
            a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
            for a, b in zip(obs, ref_obs, strict=True))
        if not same:
            raise DataError(
                f"{name!r} and {ref_name!r} have the same number of observations but different "
                "observed values: likelihoods on different data cannot be compared. Fit both "
                "models to the same outcome.")


def _names(fits, names) -> list[str]:
    if names is None:
        names = [f.model_name for f in fits]
    names = [str(n) for n in names]
    if len(names) != len(fits):
        raise MLEError(f"names= has {len(names)} entries for {len(fits)} fits.")
    seen: dict[str, int] = {}
    out = []
    for n in names:  # make duplicates unique: model, model (2)
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


@dataclass(frozen=True)
class LRTResult:
    """A likelihood-ratio test of a smaller model against a larger one that contains it."""

    small: str
    big: str
    small_loglik: float
    big_loglik: float
    statistic: float  #: ``2 (loglik_big - loglik_small)``
    df: int  #: difference in the number of free parameters
    p_value: float  #: ``P(chi2_df > statistic)``
    notes: tuple[str, ...] = ()  #: caveats (a variance component tested on its boundary)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return {"small": self.small, "big": self.big, "small_loglik": self.small_loglik,
                "big_loglik": self.big_loglik, "statistic": self.statistic, "df": self.df,
                "p_value": self.p_value, "notes": list(self.notes)}

    def __str__(self) -> str:
        notes = "".join(f"\n  Note: {n}" for n in self.notes)
        return (f"Likelihood-ratio test: {self.small} (loglik {self.small_loglik:.6g}) within "
                f"{self.big} (loglik {self.big_loglik:.6g})\n"
                f"  LR = {self.statistic:.6g}, df = {self.df}, p = {fmt_p(self.p_value, 4)}"
                f"{notes}")


def lrt(small: Estimate, big: Estimate, *, names: Sequence[str] | None = None,
        tol: float = 1e-6) -> LRTResult:
    """Likelihood-ratio test of a nested model ``small`` against ``big``, on the same data.

    The statistic ``2 (loglik_big - loglik_small)`` is referred to ``chi2`` with ``df`` the
    difference in free parameters. This is valid for nested models whose restriction is interior
    (not a variance at 0 or a mixture weight at the boundary, where the test is conservative).

    Parameters
    ----------
    small, big : Estimate
        Converged fits on the same observations; ``small`` has fewer parameters.
    names : pair of str, optional
        Display names (default: the model names).
    tol : float
        Relative tolerance on the log-likelihoods: ``small`` above ``big`` by more than
        ``tol * max(1, |loglik|)`` means the models are not nested (or ``big`` is not at its
        maximum) and is refused.

    Returns
    -------
    LRTResult

    Examples
    --------
    >>> res = mle_ppl.lrt(fit_small, fit_big)   # doctest: +SKIP
    >>> res.p_value                             # doctest: +SKIP
    """
    nm = _names([small, big], names)
    for f, n in zip((small, big), nm, strict=True):
        if not f.converged:
            raise MLEError(f"{n!r} did not converge; a likelihood-ratio test needs both maxima. "
                           "Refit it first (see its warnings).")
    check_same_data([small, big], nm)
    check_comparable([small, big], nm, what="a likelihood-ratio test")
    df = big.n_params - small.n_params
    if df <= 0:
        raise MLEError(
            f"{nm[0]!r} has {small.n_params} parameters and {nm[1]!r} {big.n_params}: the small "
            "model must have fewer parameters. Pass lrt(small, big) in that order.")
    slack = tol * max(1.0, abs(big.loglik))
    if small.loglik > big.loglik + slack:
        raise MLEError(
            f"{nm[0]!r} has a higher log-likelihood ({small.loglik:.10g}) than {nm[1]!r} "
            f"({big.loglik:.10g}): the models do not look nested (a nested big model can only do "
            "better), or the big fit stopped at a local optimum (try starts=).")
    stat = max(0.0, 2.0 * (big.loglik - small.loglik))
    notes = ()
    if getattr(big, "random_effects", None) is not None:
        notes = ("mixed models: if the small model sets a variance component of the big one to "
                 "0, the null is on the boundary of the parameter space and this chi2(df) "
                 "p-value is conservative (for one variance the reference distribution is the "
                 "50:50 mixture of chi2(0) and chi2(1): halve the p-value).",)
    how = {f.random_effects.method for f in (small, big)
           if getattr(f, "random_effects", None) is not None}
    if len(how) > 1:
        notes += ("the two fits integrate their random effects differently "
                  f"({' vs '.join(sorted(how))}): each log-likelihood carries its own "
                  "approximation error, which enters the statistic. Fit both the same way (the "
                  "same n_quadrature=).",)
    return LRTResult(small=nm[0], big=nm[1], small_loglik=float(small.loglik),
                     big_loglik=float(big.loglik), statistic=stat, df=int(df),
                     p_value=float(stats.chi2.sf(stat, df)), notes=notes)


def ic_table(fits: Sequence[Estimate], *, names: Sequence[str] | None = None,
             sort: bool = True) -> pd.DataFrame:
    """Information criteria of fits on the same data, best (lowest AIC) first.

    Columns: ``n_params``, ``n_obs``, ``loglik``, ``aic``, ``aicc`` (small-sample AIC,
    ``aic + 2k(k+1)/(n-k-1)``), ``bic``, ``delta_aic``, ``aic_weight`` (Akaike weights),
    ``delta_bic``. Refuses fits on different observations.

    Examples
    --------
    >>> mle_ppl.ic_table([fit1, fit2], names=["linear", "quadratic"])   # doctest: +SKIP
    """
    fits = list(fits)
    if not fits:
        raise MLEError("ic_table needs at least one fit.")
    nm = _names(fits, names)
    check_same_data(fits, nm)
    check_comparable(fits, nm, what="an information-criterion table")
    rows = []
    for f in fits:
        k, n = f.n_params, f.n_obs
        aicc = f.aic + 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf
        rows.append({"n_params": k, "n_obs": n, "loglik": f.loglik, "aic": f.aic,
                     "aicc": aicc, "bic": f.bic})
    df = pd.DataFrame(rows, index=nm)
    df["delta_aic"] = df["aic"] - df["aic"].min()
    w = np.exp(-0.5 * df["delta_aic"])
    df["aic_weight"] = w / w.sum()
    df["delta_bic"] = df["bic"] - df["bic"].min()
    return df.sort_values("aic", kind="stable") if sort else df
