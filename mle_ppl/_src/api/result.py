"""The immutable result of a maximum-likelihood fit."""

from __future__ import annotations

import contextlib
import html
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mle_ppl._src.errors import MLEError

if TYPE_CHECKING:
    from mle_ppl._src.engine.likelihood import Likelihood

#: The one registry of confidence-interval methods for :meth:`MLEFit.conf_int`.
CI_METHODS = ("wald", "profile")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.flags.writeable = False
    return a


def _normal_quantile(q: float) -> float:
    """Standard normal quantile (stdlib: scipy.special/stats cost 0.3-1.5 s to import)."""
    return statistics.NormalDist().inv_cdf(q)


def _two_sided_p(z: np.ndarray) -> np.ndarray:
    """Two-sided normal p-values ``2 (1 - Phi(|z|)) = erfc(|z| / sqrt 2)``, accurate in the tail."""
    z = np.asarray(z, dtype=float)
    return np.array([math.erfc(abs(v) / math.sqrt(2.0)) if not math.isnan(v)
                     else np.nan for v in z.ravel()]).reshape(z.shape)


@dataclass(frozen=True, eq=False, repr=False)
class MLEFit:
    """A maximum-likelihood fit: estimates, observed-information uncertainty and diagnostics.

    Created by :func:`mle_ppl.fit`; immutable. Numbers are on the user's (constrained) scale.

    Examples
    --------
    >>> fit = mle_ppl.fit(model)          # doctest: +SKIP
    >>> fit.table()                       # doctest: +SKIP
    """

    model_name: str
    labels: tuple[str, ...]
    theta: np.ndarray  #: estimates on the user's scale, flat, in label order
    x: np.ndarray  #: the optimum on the unconstrained (optimizer's) scale
    cov_array: np.ndarray  #: covariance on the user's scale (NaN when not trustworthy)
    cov_unconstrained: np.ndarray
    loglik: float
    n_obs: int
    method: str
    converged: bool
    iterations: int
    n_evals: int
    grad_norm: float
    hessian_min_eig: float
    hessian_cond: float
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    history: tuple[float, ...]
    values: dict[str, np.ndarray]  #: estimates by variable (and deterministics), original shapes
    fit_time: float
    likelihood: Likelihood = field(repr=False)
    data: Any = field(default=None, repr=False)  #: the bound data table, when fitted from a spec
    spec: Any = field(default=None, repr=False)  #: the ModelSpec, when fitted from a model file
    #: :class:`~mle_ppl._src.engine.multistart.MultiStartReport` when fitted with ``starts > 1``
    multistart: Any = field(default=None, repr=False)
    #: the data the fit was made on: (shared variable, value) pairs, see :meth:`bound`
    data_snapshot: tuple = field(default=(), repr=False)
    coords_snapshot: dict = field(default_factory=dict, repr=False)

    @contextlib.contextmanager
    def bound(self):
        """Context in which the model's data containers hold this fit's data again.

        A model (or a model file's cached model) refitted on new data shares its containers
        with earlier fits; every method that evaluates the likelihood again (profiles, sandwich,
        bootstrap, predictions, the DataTree) runs inside this context, so an older fit keeps
        describing its own data.
        """
        changed = [(v, v.get_value(borrow=True), val) for v, val in self.data_snapshot
                   if v.get_value(borrow=True) is not val]
        model = self.likelihood.model
        coords_now = dict(model.coords)
        for v, _, val in changed:
            v.set_value(val, borrow=True)
        if changed and self.coords_snapshot:
            model._coords.update(self.coords_snapshot)  # PyMC keeps coordinate values here
        try:
            yield self
        finally:
            for v, cur, _ in changed:
                v.set_value(cur, borrow=True)
            if changed and self.coords_snapshot:
                model._coords.update(coords_now)

    def __post_init__(self):
        for name in ("theta", "x", "cov_array", "cov_unconstrained"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    # ------------------------------------------------------------- numbers
    @property
    def n_params(self) -> int:
        """Number of free parameters (scalars) estimated."""
        return len(self.theta)

    @property
    def estimates(self) -> pd.Series:
        """MLE by parameter label."""
        return pd.Series(np.array(self.theta), index=list(self.labels), name="estimate")

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors from the inverse observed information (NaN when not trustworthy)."""
        se = np.sqrt(np.clip(np.diag(self.cov_array), 0, None)) if self.n_params else np.zeros(0)
        se = np.where(np.isfinite(np.diag(self.cov_array)), se, np.nan)
        return pd.Series(se, index=list(self.labels), name="std_err")

    @property
    def cov(self) -> pd.DataFrame:
        """Covariance matrix on the user's scale, labels × labels."""
        return pd.DataFrame(np.array(self.cov_array), index=list(self.labels),
                            columns=list(self.labels))

    @property
    def aic(self) -> float:
        """Akaike information criterion, ``2k - 2 loglik``."""
        return 2.0 * self.n_params - 2.0 * self.loglik

    @property
    def bic(self) -> float:
        """Bayesian information criterion, ``k log n - 2 loglik``."""
        return self.n_params * math.log(max(self.n_obs, 1)) - 2.0 * self.loglik

    @property
    def trustworthy(self) -> bool:
        """Converged, identifiable, interior: no diagnostic warning."""
        return self.converged and not self.warnings

    def conf_int(self, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
        """Confidence intervals, a DataFrame indexed by label with columns ``lower``, ``upper``.

        Parameters
        ----------
        level : float
            Coverage, in (0, 1).
        method : {"wald", "profile"}
            Wald: ``estimate ± z·SE``. Profile: where the profile log-likelihood drops by
            ``chi2(1).ppf(level)/2`` (see :meth:`profile`).
        """
        if not 0 < level < 1:
            raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
        if method not in CI_METHODS:
            raise MLEError(f"method={method!r} is not a confidence-interval method; expected one "
                           f"of {list(CI_METHODS)}.")
        if method == "profile":
            from mle_ppl._src.inference.profile import profile_conf_int

            with self.bound():
                return profile_conf_int(self, level=level)
        z = _normal_quantile(0.5 + level / 2)
        se = self.std_errors.to_numpy()
        est = np.array(self.theta)
        return pd.DataFrame({"lower": est - z * se, "upper": est + z * se},
                            index=list(self.labels))

    def table(self, level: float = 0.95, *, cov_type: str = "nonrobust",
              groups=None) -> pd.DataFrame:
        """Estimate, std_err, z, p_value (two-sided Wald), ci_lower, ci_upper per parameter.

        ``cov_type`` ("nonrobust", "HC0", "HC1", "cluster" with ``groups=``) chooses the
        covariance behind std_err, z, p_value and the Wald interval (see :meth:`robust_cov`).
        """
        est = np.array(self.theta)
        if cov_type == "nonrobust":
            se = self.std_errors.to_numpy()
            ci = self.conf_int(level)
        else:
            cov = self.robust_cov(cov_type, groups=groups).to_numpy()
            se = np.sqrt(np.clip(np.diag(cov), 0, None))
            se = np.where(np.isfinite(np.diag(cov)), se, np.nan)
            zq = _normal_quantile(0.5 + level / 2)
            ci = pd.DataFrame({"lower": est - zq * se, "upper": est + zq * se})
        with np.errstate(divide="ignore", invalid="ignore"):
            z = est / se
        p = _two_sided_p(z)
        return pd.DataFrame({"estimate": est, "std_err": se, "z": z, "p_value": p,
                             "ci_lower": ci["lower"].to_numpy(),
                             "ci_upper": ci["upper"].to_numpy()}, index=list(self.labels))

    # ------------------------------------------- inference beyond Wald (issue 6)
    def robust_cov(self, kind: str = "HC0", *, groups=None) -> pd.DataFrame:
        """Sandwich covariance ("HC0", "HC1", "cluster" with ``groups=``); see
        :func:`mle_ppl._src.inference.robust.robust_cov`."""
        from mle_ppl._src.inference.robust import robust_cov

        with self.bound():
            return robust_cov(self, kind, groups=groups)

    def profile(self, param: str, **kwargs):
        """Profile likelihood of a parameter label or an expression; see :func:`mle_ppl.profile`."""
        from mle_ppl._src.inference.profile import profile

        with self.bound():
            return profile(self, param, **kwargs)

    def bootstrap(self, n_boot: int = 200, **kwargs):
        """Nonparametric or parametric bootstrap; see :func:`mle_ppl.bootstrap`."""
        from mle_ppl._src.inference.bootstrap import bootstrap

        with self.bound():
            return bootstrap(self, n_boot, **kwargs)

    def predict(self, new_data=None, kind: str = "mean", **kwargs) -> pd.DataFrame:
        """Predictions on new data with intervals; see :func:`mle_ppl.predict`."""
        from mle_ppl._src.inference.predict import predict

        with self.bound():
            return predict(self, new_data, kind=kind, **kwargs)

    # ------------------------------------------- closed-form cross-checks (issue 7)
    def closed_form(self, **kwargs):
        """The fit beside its closed form (least squares / minimum cross-entropy); see
        :func:`mle_ppl.closed_form_check`."""
        from mle_ppl._src.report.closed_form import closed_form_check

        with self.bound():
            return closed_form_check(self, **kwargs)

    def plot_closed_form(self, **kwargs):
        """ArviZ plot of the fit with reference lines at the closed-form solution; see
        :func:`mle_ppl._src.report.closed_form.plot_closed_form`."""
        from mle_ppl._src.report.closed_form import plot_closed_form

        with self.bound():
            return plot_closed_form(self, **kwargs)

    # ------------------------------------------------------------- exports
    def diagnostics(self) -> dict[str, Any]:
        """Optimizer and curvature diagnostics as a plain dict."""
        return {"grad_norm": _num(self.grad_norm), "hessian_min_eig": _num(self.hessian_min_eig),
                "hessian_cond": _num(self.hessian_cond), "iterations": int(self.iterations),
                "n_evals": int(self.n_evals)}

    def to_dict(self, *, ci: str = "wald", cov_type: str = "nonrobust",
                groups=None) -> dict[str, Any]:
        """The JSON document of DESIGN.md section 3 (NaN and infinities become ``null``).

        ``ci="profile"`` gives profile-likelihood intervals (with ``ci_open`` flags per
        parameter: an open end is ``null``); ``cov_type`` ("HC0", "HC1", "cluster" with
        ``groups=``) the covariance behind ``std_err`` and Wald intervals. The document records
        both as ``ci_method`` and ``cov_type``.
        """
        if ci not in CI_METHODS:
            raise MLEError(f"ci={ci!r} is not a confidence-interval method; expected one of "
                           f"{list(CI_METHODS)}.")
        tab = self.table(cov_type=cov_type, groups=groups)
        params = {
            lab: {"estimate": _num(r.estimate), "std_err": _num(r.std_err),
                  "ci_lower": _num(r.ci_lower), "ci_upper": _num(r.ci_upper)}
            for lab, r in tab.iterrows()
        }
        if ci == "profile":
            pci = self.conf_int(method="profile")
            for lab, r in pci.iterrows():
                lo_open, hi_open = pci.attrs["open"][lab]
                params[lab].update({"ci_lower": None if lo_open else _num(r.lower),
                                    "ci_upper": None if hi_open else _num(r.upper),
                                    "ci_open": [bool(lo_open), bool(hi_open)]})
        out = {"model": self.model_name, "n_obs": int(self.n_obs),
               "n_params": int(self.n_params), "method": self.method,
               "converged": bool(self.converged), "loglik": _num(self.loglik),
               "aic": _num(self.aic), "bic": _num(self.bic), "ci_method": ci,
               "cov_type": cov_type, "parameters": params,
               "diagnostics": self.diagnostics(), "warnings": list(self.warnings),
               "notes": list(self.notes), "closed_form": self._closed_form_dict()}
        if self.multistart is not None:
            out["multistart"] = self.multistart.to_dict()
        return out

    def _closed_form_dict(self) -> dict[str, Any]:
        from mle_ppl._src.report.closed_form import closed_form_dict

        with self.bound():
            return closed_form_dict(self)

    def to_datatree(self, *, laplace_draws: int = 0, random_seed=None):
        """ArviZ ``DataTree``: posterior (the MLE as one draw, or Laplace draws), fit, ...

        See DESIGN.md section 5. ``laplace_draws=N`` draws N times from the normal approximation
        on the unconstrained scale and maps the draws back (so σ stays positive).
        """
        from mle_ppl._src.report.datatree import fit_to_datatree

        with self.bound():
            return fit_to_datatree(self, laplace_draws=laplace_draws, random_seed=random_seed)

    # ------------------------------------------------------------- display
    def _header(self) -> list[tuple[str, str]]:
        return [("model", self.model_name), ("method", self.method),
                ("converged", str(self.converged)), ("n_obs", str(self.n_obs)),
                ("n_params", str(self.n_params)), ("log-likelihood", f"{self.loglik:.6g}"),
                ("AIC", f"{self.aic:.6g}"), ("BIC", f"{self.bic:.6g}"),
                ("iterations", str(self.iterations)), ("grad norm", f"{self.grad_norm:.2e}")]

    def __str__(self) -> str:
        head = "\n".join(f"{k:>15}: {v}" for k, v in self._header())
        with pd.option_context("display.float_format", "{:.6g}".format, "display.width", 120):
            body = self.table().to_string()
        warn = "".join(f"\nWARNING: {w}" for w in self.warnings)
        notes = "".join(f"\nNote: {n}" for n in self.notes)
        return f"Maximum-likelihood fit\n{head}\n\n{body}{warn}{notes}"

    def __repr__(self) -> str:
        return (f"<MLEFit {self.model_name!r}: {self.n_params} params, n={self.n_obs}, "
                f"loglik={self.loglik:.6g}, converged={self.converged}, "
                f"warnings={len(self.warnings)}>")

    def _repr_html_(self) -> str:
        head = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td>{html.escape(v)}</td></tr>" for k, v in self._header())
        tab = self.table().to_html(float_format=lambda v: f"{v:.6g}", na_rep="NaN")
        warn = "".join(f"<p style='color:#b00'><b>Warning:</b> {html.escape(w)}</p>"
                       for w in self.warnings)
        notes = "".join(f"<p><i>Note:</i> {html.escape(n)}</p>" for n in self.notes)
        return (f"<div><b>Maximum-likelihood fit</b><table>{head}</table>{tab}{warn}{notes}"
                "</div>")


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
